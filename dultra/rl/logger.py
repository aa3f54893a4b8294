"""Per-step training metrics to `metrics.jsonl` and TensorBoard (main process only).

    logger = MetricsLogger(output_dir, enabled=accelerator.is_main_process, resume_step=0)
    logger.log(step, {"reward/total": 0.4, "nfe": 17.2})
    tensorboard --logdir OUTPUT_DIR/tensorboard
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsLogger:
    def __init__(self, output_dir: str | Path, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A resumed run rewrites history after its checkpoint, so no step is logged twice.
        if self.path.exists():
            kept = [row for row in _rows(self.path) if row["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=resume_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        for key, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _rows(path: Path) -> list[dict]:
    """The rows of a metrics file; lines a killed run left half-written are skipped, with a warning."""
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        else:
            bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s) (a run killed while writing)", stacklevel=3)
    return rows


def read_metrics(output_dir: str | Path) -> list[dict]:
    """The logged rows of a run, in order (unreadable lines skipped, with a warning)."""
    return _rows(Path(output_dir) / "metrics.jsonl")
