"""Evaluation: accuracy, NFE and TPF of a model under decoding strategies."""

from dultra.eval.accuracy import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
