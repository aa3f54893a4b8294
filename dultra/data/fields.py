"""Checks that raw rows carry the fields a task needs, with errors that name what is missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dultra.errors import DataError


def require_fields(
    rows: Sequence[dict[str, Any]], task: str, required: Sequence[str],
    any_of: Sequence[Sequence[str]] = (),
) -> None:
    """Every row must have each field of `required` and at least one of each `any_of` group."""
    if not rows:
        raise DataError(f"{task}: the dataset has no rows")
    for i, row in enumerate(rows):
        missing = [f for f in required if row.get(f) is None]
        missing += [" or ".join(group) for group in any_of if all(row.get(f) is None for f in group)]
        if missing:
            raise DataError(
                f"{task}: row {i} lacks the field(s) {', '.join(missing)} that this task needs "
                f"(it has: {', '.join(sorted(row)) or 'nothing'})"
            )


def first_present(row: dict[str, Any], names: Sequence[str]) -> Any:
    """The value of the first field of `names` that the row has (require_fields checked one)."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise KeyError(names)
