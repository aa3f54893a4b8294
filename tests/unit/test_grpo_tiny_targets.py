"""The demonstration's pass/fail logic (benchmarks/grpo_tiny.py) on hand-made result rows."""

from __future__ import annotations

from benchmarks.grpo_tiny import Row, check_targets, choose_planner

PLANNER = "planner:factor=1.0"


def _rows(grpo_acc: float, grpo_nfe: float) -> list[Row]:
    return [
        Row("base", "threshold:tau=0.9", 0.80, 5.0, 2.6, 1.0),
        Row("base", "threshold:tau=0.99", 0.80, 6.0, 2.2, 1.0),  # tie on accuracy: more NFE, not the best
        Row("base", "threshold:tau=0.5", 0.60, 2.0, 6.5, 1.0),
        Row("base", "low-confidence:steps=16", 0.90, 16.0, 0.8, 1.0),  # not a threshold setting
        Row("warm-start", PLANNER, 0.78, 4.0, 3.2, 1.0),
        Row("warm-start", "planner:factor=1.01", 0.70, 2.0, 6.5, 1.0),  # another factor: not compared
        Row("grpo", PLANNER, grpo_acc, grpo_nfe, 13 / grpo_nfe, 1.0),
    ]


def test_both_targets_met():
    t = check_targets(_rows(0.80, 2.5), PLANNER)
    assert t["best_threshold"] == "threshold:tau=0.9" and t["planner"] == PLANNER
    assert t["vs_threshold"]["met"] and t["vs_threshold"]["nfe_ratio"] == 0.5
    assert t["vs_warm_start"]["met"] and abs(t["vs_warm_start"]["nfe_reduction"] - 0.375) < 1e-9


def test_each_target_fails_on_its_own_condition():
    fewer_steps_worse = check_targets(_rows(0.79, 2.0), PLANNER)  # below the best threshold's accuracy
    assert not fewer_steps_worse["vs_threshold"]["met"] and fewer_steps_worse["vs_warm_start"]["met"]
    accurate_but_slow = check_targets(_rows(0.85, 3.0), PLANNER)  # 60% of the threshold's NFE, 25% fewer than warm
    assert not accurate_but_slow["vs_threshold"]["met"] and not accurate_but_slow["vs_warm_start"]["met"]
    assert check_targets(_rows(0.85, 2.8), PLANNER)["vs_warm_start"]["met"]  # exactly 30% fewer


def _val(planners: list[tuple[str, float, float]]) -> list[Row]:
    base = [Row("base", "threshold:tau=0.99", 0.90, 6.0, 2.0, 1.0),  # most accurate: budget 3.0 NFE
            Row("base", "threshold:tau=0.5", 0.60, 2.0, 6.5, 1.0)]
    return base + [Row("grpo", spec, acc, nfe, 13 / nfe, 1.0) for spec, acc, nfe in planners]


def test_choose_planner_takes_the_most_accurate_factor_within_half_the_best_thresholds_nfe():
    rows = _val([("planner:factor=1.0", 0.95, 3.5), ("planner:factor=1.001", 0.93, 3.0),
                 ("planner:factor=1.02", 0.91, 2.5), ("planner:factor=1.05", 0.93, 2.8)])
    assert choose_planner(rows) == "planner:factor=1.05"  # ties on accuracy go to the fewer NFE
    over_budget = _val([("planner:factor=1.0", 0.95, 3.5), ("planner:factor=1.02", 0.94, 3.2)])
    assert choose_planner(over_budget) == "planner:factor=1.02"  # none fits: the fewest NFE
