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
