"""The demonstration's pass/fail logic (benchmarks/grpo_tiny.py) on hand-made result rows."""

from __future__ import annotations

from benchmarks.grpo_tiny import Row, check_targets


def _rows(grpo_acc: float, grpo_nfe: float) -> list[Row]:
    return [
        Row("base", "threshold:tau=0.9", 0.80, 5.0, 2.6, 1.0),
        Row("base", "threshold:tau=0.99", 0.80, 6.0, 2.2, 1.0),  # tie on accuracy: more NFE, not the best
        Row("base", "threshold:tau=0.5", 0.60, 2.0, 6.5, 1.0),
        Row("base", "low-confidence:steps=16", 0.90, 16.0, 0.8, 1.0),  # not a threshold setting
        Row("warm-start", "planner:factor=1.0", 0.78, 4.0, 3.2, 1.0),
        Row("grpo", "planner:factor=1.0", grpo_acc, grpo_nfe, 13 / grpo_nfe, 1.0),
    ]


def test_both_targets_met():
    t = check_targets(_rows(0.80, 2.5))
    assert t["best_threshold"] == "threshold:tau=0.9"
    assert t["vs_threshold"]["met"] and t["vs_threshold"]["nfe_ratio"] == 0.5
    assert t["vs_warm_start"]["met"] and abs(t["vs_warm_start"]["nfe_reduction"] - 0.375) < 1e-9


def test_each_target_fails_on_its_own_condition():
    fewer_steps_worse = check_targets(_rows(0.79, 2.0))  # below the best threshold's accuracy
    assert not fewer_steps_worse["vs_threshold"]["met"] and fewer_steps_worse["vs_warm_start"]["met"]
    accurate_but_slow = check_targets(_rows(0.85, 3.0))  # 60% of the threshold's NFE, 25% fewer than warm
    assert not accurate_but_slow["vs_threshold"]["met"] and not accurate_but_slow["vs_warm_start"]["met"]
    assert check_targets(_rows(0.85, 2.8))["vs_warm_start"]["met"]  # exactly 30% fewer
