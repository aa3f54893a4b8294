"""AUP, the area under a method's accuracy-parallelism curve (d3LLM; dultra.md section 7).

    aup([(tpf_1, acc_1), (tpf_2, acc_2), ...], y_max)       # accuracies in %

Points are sorted by TPF (rho). Points whose accuracy falls more than 5 points below the
first (lowest-TPF) point's are dropped. Then
    AUP = rho_1 * y_1 + sum_{i>=2} (rho_i - rho_{i-1}) / 2 * (y_i W(y_i) + y_{i-1} W(y_{i-1}))
with W(y) = min(exp(-3 (1 - y / y_max)), 1) and y_max the best accuracy of any method on
the task: parallelism counts fully only at accuracy close to the best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def accuracy_weight(y: float, y_max: float) -> float:
    """W(y) = min(exp(-3 (1 - y / y_max)), 1); 0 when y_max is 0."""
    if y_max <= 0:
        return 0.0
    return min(math.exp(-3.0 * (1.0 - y / y_max)), 1.0)


def kept_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(tpf, accuracy %) sorted by tpf, without points more than 5 below the first's accuracy.
    Of points with the same tpf the most accurate comes first: it sets the floor, a worse one
    at no more parallelism must not lower it."""
    ordered = sorted(points, key=lambda p: (p[0], -p[1]))
    if not ordered:
        return []
    floor = ordered[0][1] - 5.0
    return [p for p in ordered if p[1] >= floor]


def aup(points: Sequence[tuple[float, float]], y_max: float) -> float:
    """AUP of one method's (tpf, accuracy %) points."""
    kept = kept_points(points)
    if not kept:
        return 0.0
    rho, y = kept[0]
    total = rho * y
    for (r0, y0), (r1, y1) in zip(kept, kept[1:]):
        total += (r1 - r0) / 2.0 * (y1 * accuracy_weight(y1, y_max) + y0 * accuracy_weight(y0, y_max))
    return total
