"""Evaluation: accuracy, NFE, TPF and speed per strategy, AUP, the Pareto report."""

from dultra.eval.accuracy import EvalResult, SampleRecord, evaluate

__all__ = ["EvalResult", "SampleRecord", "evaluate"]
