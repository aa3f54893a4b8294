"""Kustomizations rendered and validated as `kubectl kustomize` and the cluster would (offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def kustomize(path: Path) -> str:
    """The YAML stream `kubectl kustomize path` renders."""
    return subprocess.run(
        ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True
    ).stdout


def build(path: Path) -> list[dict]:
    """The documents of a kustomization."""
    return [doc for doc in yaml.safe_load_all(kustomize(path)) if doc]


def validate(docs: list[dict], path: Path) -> subprocess.CompletedProcess:
    """kubernetes-validate --strict on docs written to path (bundled schemas, no cluster)."""
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run([str(VALIDATE), "--strict", str(path)], capture_output=True, text=True)
