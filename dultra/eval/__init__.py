"""Evaluation: accuracy, NFE, TPF and speed per strategy, AUP, the Pareto report."""

from dultra.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"accuracy": ("EvalResult", "SampleRecord", "evaluate")})

__all__ = ["EvalResult", "SampleRecord", "evaluate"]
