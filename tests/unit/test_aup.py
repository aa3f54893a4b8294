"""AUP on hand-made curves, computed by hand."""

from __future__ import annotations

import math

import pytest

from dultra.eval.aup import accuracy_weight, aup, kept_points


def test_single_point_is_rectangle():
    assert aup([(2.0, 80.0)], 80.0) == pytest.approx(160.0)


def test_trapezoids_at_full_weight():
    # Both points at y_max: W = 1, so AUP = 1*80 + (3-1)/2*(80+80) = 240.
    assert aup([(3.0, 80.0), (1.0, 80.0)], 80.0) == pytest.approx(240.0)


def test_weight_discounts_lower_accuracy():
    w = math.exp(-3 * (1 - 76 / 80))
    assert accuracy_weight(76.0, 80.0) == pytest.approx(w)
    assert aup([(1.0, 80.0), (4.0, 76.0)], 80.0) == pytest.approx(80 + 3 / 2 * (76 * w + 80))


def test_points_far_below_the_first_are_dropped():
    points = [(1.0, 70.0), (2.0, 66.0), (5.0, 40.0)]
    assert kept_points(points) == [(1.0, 70.0), (2.0, 66.0)]
    w66, w70 = accuracy_weight(66, 80), accuracy_weight(70, 80)
    assert aup(points, 80.0) == pytest.approx(70 + 0.5 * (66 * w66 + 70 * w70))


def test_better_parallelism_at_equal_accuracy_scores_higher():
    assert aup([(1.0, 75.0), (6.0, 75.0)], 78.0) > aup([(1.0, 75.0), (3.0, 75.0)], 78.0)
    assert aup([], 80.0) == 0.0 and accuracy_weight(50.0, 0.0) == 0.0


def test_of_equal_tpf_the_most_accurate_sets_the_floor():
    points = [(2.0, 60.0), (2.0, 75.0), (4.0, 71.0)]
    assert kept_points(points) == [(2.0, 75.0), (4.0, 71.0)]
    assert aup(points, 75.0) == pytest.approx(2 * 75 + (4 - 2) / 2 * (71 * accuracy_weight(71, 75) + 75))


def record(strategy: str, tokens: int, nfe: int, correct: bool):
    from dultra.eval.accuracy import SampleRecord

    return SampleRecord(strategy=strategy, id=f"{tokens}-{nfe}", completion="", extracted=None, reference=None,
                        score=float(correct), correct=correct, nfe=nfe, tokens=tokens, latency_s=0.1, batch_size=1)


def test_tpf_is_mean_tokens_over_mean_nfe():
    """As the reference computes it: a short answer decoded in one pass must not inflate TPF."""
    from dultra.eval.accuracy import EvalResult
    from dultra.eval.report import summarize

    records = [record("planner:factor=1.0", 12, 1, True), record("planner:factor=1.0", 256, 64, False)]
    [row] = summarize(records)
    assert row["tpf"] == pytest.approx(268 / 65) and row["nfe"] == pytest.approx(32.5)
    assert EvalResult("planner:factor=1.0", records).mean_tpf == pytest.approx(268 / 65)


def test_y_max_from_another_run_makes_aups_comparable():
    from dultra.eval.report import method_aup, summarize

    rows = summarize([record(f"planner:factor={f}", tokens, 10, correct)
                      for f, tokens in ((1.0, 30), (2.0, 50)) for correct in (True, False)])  # 50% at TPF 3 and 5
    alone = method_aup(rows)["planner"]
    assert alone["y_max"] == 50.0 and alone["aup"] == pytest.approx(3 * 50 + (5 - 3) / 2 * (50 + 50))
    baseline = method_aup(rows, y_max=80.0)["planner"]
    w = accuracy_weight(50, 80)
    assert baseline["y_max"] == 80.0 and baseline["aup"] == pytest.approx(3 * 50 + (5 - 3) / 2 * (50 * w + 50 * w))
    assert method_aup(rows, y_max=20.0)["planner"]["y_max"] == 50.0  # this run's best still wins
