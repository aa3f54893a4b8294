"""Decoding strategies for masked-diffusion LMs, trajectories and their log-probabilities."""

from dultra.decoding.generate import DecodeConfig, DecodeOutput, generate
from dultra.decoding.strategies import (
    STRATEGIES,
    EntropyBounded,
    Factor,
    LowConfidence,
    PlannerGreedy,
    PlannerSample,
    Strategy,
    Threshold,
    parse_strategy,
)
from dultra.decoding.trajectory import Trajectory, replay, step_log_prob

__all__ = [
    "STRATEGIES", "DecodeConfig", "DecodeOutput", "EntropyBounded", "Factor", "LowConfidence",
    "PlannerGreedy", "PlannerSample", "Strategy", "Threshold", "Trajectory", "generate",
    "parse_strategy", "replay", "step_log_prob",
]
