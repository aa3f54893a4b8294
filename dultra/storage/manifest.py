"""The manifest of a published run: what files it holds and where it came from.

`runs/<id>/manifest.json` is written after every file of the run, so its presence is what
makes a run complete. Per-file sha256 lives here because S3's own checksums of multipart
objects are composites of the parts, not the file's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from dultra.storage.errors import IntegrityError, NotACheckpoint, StorageError
from dultra.storage.loadable import check_loadable
from dultra.storage.progress import ByteProgress
from dultra.storage.uri import MANIFEST_NAME, check_run_id

SCHEMA_VERSION = 1
_CHUNK = 1 << 20
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint."""

    path: str  # relative POSIX path inside the checkpoint directory (and the run prefix)
    size: int  # bytes
    sha256: str  # lowercase hex digest of the whole file


@dataclass(frozen=True)
class Manifest:
    """Everything `manifest.json` records about one run."""

    run_id: str  # the `runs/<id>` this manifest belongs to
    created: str  # ISO 8601 UTC time the manifest was built, e.g. 2025-01-31T12:00:00Z
    files: tuple[FileEntry, ...]  # every file of the run, sorted by path; nothing else is in the run
    config: dict[str, Any] | None = None  # the run's training config, if the publisher gave one
    metrics: dict[str, Any] | None = None  # evaluation metrics (accuracy, NFE, TPF, ...), if given
    base_model: str | None = None  # what the run was trained from, e.g. GSAI-ML/LLaDA-8B-Instruct
    git_commit: str | None = None  # commit of the dultra code that published it, when known
    schema_version: int = field(default=SCHEMA_VERSION)  # bumped on incompatible changes

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Manifest:
        """Parse and validate; anything malformed is an IntegrityError naming `where`."""
        try:
            data = json.loads(raw)
            version = data["schema_version"]
        except (ValueError, KeyError, TypeError) as err:
            raise IntegrityError(f"{where} is not a valid manifest: {type(err).__name__}: {err}") from None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise StorageError(f"{where} has schema_version {version}; this dultra reads up to "
                               f"{SCHEMA_VERSION} (upgrade dultra)")
        try:
            if version != SCHEMA_VERSION:
                raise ValueError(f"schema_version {version!r}")
            files = tuple(_entry(f) for f in data["files"])
            manifest = cls(
                run_id=check_run_id(data["run_id"]), created=str(data["created"]), files=files,
                config=data.get("config"), metrics=data.get("metrics"), base_model=data.get("base_model"),
                git_commit=data.get("git_commit"), schema_version=version,
            )
        except (ValueError, KeyError, TypeError) as err:
            raise IntegrityError(f"{where} is not a valid manifest: {type(err).__name__}: {err}") from None
        if len({f.path for f in files}) != len(files):
            raise IntegrityError(f"{where} lists a file twice")
        return manifest


def _entry(data: dict[str, Any]) -> FileEntry:
    size, sha = data["size"], data["sha256"]
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r} for {data['path']!r}")
    if not isinstance(sha, str) or not SHA256_HEX.match(sha):
        raise ValueError(f"bad sha256 {sha!r} for {data['path']!r}")
    return FileEntry(path=check_path(data["path"]), size=size, sha256=sha)


def check_path(path: str) -> str:
    """A manifest path must stay inside the checkpoint directory: no absolute paths, no `..`.
    This is what stops a hostile manifest from making `pull` write outside DIR."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) \
            or str(PurePosixPath(*parts)) != path:
        raise IntegrityError(f"unsafe file path {path!r}")
    if path == MANIFEST_NAME:
        raise IntegrityError(f"{MANIFEST_NAME} is reserved for the run's manifest")
    return path


def is_checkpoint(directory: Path) -> bool:
    """A loadable model directory: config.json and safetensors weights (one file, or an index
    whose every shard is there)."""
    if not directory.is_dir() or not (directory / "config.json").is_file():
        return False
    indexes = list(directory.glob("*.safetensors.index.json"))
    return all(_shards_present(index) for index in indexes) and any(directory.glob("*.safetensors"))


def _shards_present(index: Path) -> bool:
    try:
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
    except (OSError, ValueError, AttributeError, TypeError):  # TypeError: an unhashable shard name
        return False
    return bool(shards) and all(isinstance(shard, str) and (index.parent / shard).is_file() for shard in shards)


def check_checkpoint(directory: Path) -> None:
    """NotACheckpoint, with a hint at a training run's `final/`, unless `directory` is_checkpoint
    and its config and weights pass `loadable.check_loadable` (what publish needs; pull's
    --force only asks is_checkpoint, so a broken copy can still be replaced)."""
    if not directory.is_dir():
        raise NotACheckpoint(f"no checkpoint directory at {directory}")
    if is_checkpoint(directory):
        check_loadable(directory)
        return
    hint = f" (a training run's model is its final/: did you mean {directory / 'final'}?)" \
        if is_checkpoint(directory / "final") else ""
    raise NotACheckpoint(f"{directory} is not a checkpoint directory: it needs config.json and *.safetensors "
                         f"weights (every shard a *.safetensors.index.json names){hint}")


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The file's sha256; `progress(n)` after each n bytes read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def scan_directory(root: Path, progress: bool | None = False) -> tuple[FileEntry, ...]:
    """Size and sha256 of every regular file under `root`, sorted by relative path.

    Symlinks, to files or to directories, are followed (a checkpoint may link to a shared
    tokenizer); a link back into a directory it is inside is refused (it would publish
    forever), as is anything that is neither a file nor a directory (sockets, fifos).
    progress: as S3Options.progress (hashing 16 GB takes a while on a network volume).
    """
    files = []
    for path in sorted(_walk(root, ())):
        rel = path.relative_to(root).as_posix()
        if not path.is_file():
            raise StorageError(f"{path} is not a regular file; a checkpoint holds only files")
        if rel == MANIFEST_NAME:
            raise StorageError(f"{path}: {MANIFEST_NAME} is reserved for the run's manifest; rename it")
        files.append((path, check_path(rel), path.stat().st_size))
    with ByteProgress(sum(size for *_, size in files), "hash", progress) as bar:
        return tuple(FileEntry(path=rel, size=size, sha256=sha256_file(path, bar)) for path, rel, size in files)


def _walk(directory: Path, inside: tuple[Path, ...]):
    """Every non-directory under `directory`, through symlinked directories too; `inside`
    holds the real paths of the directories above, to catch links that loop."""
    real = directory.resolve()
    if real in inside:
        raise StorageError(f"{directory} links back to a directory it is inside; a checkpoint cannot hold a loop")
    for path in directory.iterdir():
        if path.is_dir():
            yield from _walk(path, (*inside, real))
        else:
            yield path


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detect_git_commit(source: Path = Path(__file__)) -> str | None:
    """The commit of the dultra source that runs: `git rev-parse HEAD` where it runs from its
    checkout (an editable install), else $DULTRA_GIT_COMMIT (baked into the trainer image,
    which has no repository), else None. A repository that merely holds an installed copy
    (a virtualenv inside some project) names the wrong code, so the file must be its own."""
    baked = os.environ.get("DULTRA_GIT_COMMIT") or None
    source = source.resolve()
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=source.parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return baked
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2 or len(lines[1]) != 40:
        return baked
    top, commit = Path(lines[0]), lines[1]
    return commit if (top / "dultra" / "storage" / source.name).resolve() == source else baked
