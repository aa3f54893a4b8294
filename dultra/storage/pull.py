"""Pull a published run into a local directory, verifying every byte first.

    dultra pull s3://bucket/dultra/llada-math ./ckpt                 # what `latest` names
    dultra pull s3://bucket/dultra/llada-math/runs/20250131T120000Z-a1b2c3 ./ckpt

Refused, with nothing written to DIR: a run without manifest.json (partial), objects
missing from or not listed in the manifest, any size or sha256 mismatch, a manifest that
is not the one `latest` recorded. Files land in a temporary directory next to DIR and are
renamed into place only after all of them verified, so DIR is either untouched or complete
(an empty existing DIR, such as `.` or a volume's mount point, is filled in place from a
staging dir inside it). A DIR that is a symlink to a directory fills or replaces the target
and keeps the link. `--force` on a mount point, which cannot be renamed, replaces its
contents in place: verified first, as always, but a kill during that last swap can leave
the old files in a `.DIR.old-*` dir inside it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from dultra.storage.errors import (
    ChecksumMismatch,
    DestinationNotEmpty,
    IncompleteRun,
    IntegrityError,
    PointerNotFound,
    RunNotFound,
)
from dultra.storage.manifest import FileEntry, Manifest, is_checkpoint, sha256_file
from dultra.storage.pointer import read_pointer
from dultra.storage.progress import ByteProgress
from dultra.storage.s3 import S3Options, is_not_found, make_client, translate_errors
from dultra.storage.uri import MANIFEST_NAME, POINTER_NAME, PullSource, S3Location, parse_pull_uri


@dataclass(frozen=True)
class PullResult:
    """What a pull installed."""

    run_id: str  # the run that was pulled (what `latest` named, for a latest pull)
    run_uri: str  # s3://bucket/prefix/runs/<id>/
    directory: Path  # the directory now holding exactly the manifest's files
    manifest: Manifest  # the run's manifest (metrics, base model, commit, ...)


def pull(
    uri: str | PullSource,
    dest: str | Path,
    *,
    force: bool = False,
    options: S3Options | None = None,
    client=None,
) -> PullResult:
    """Download the run `uri` names into `dest` after verifying it against its manifest.

    force: replace a non-empty `dest` (only once the new copy has verified).
    """
    source = uri if isinstance(uri, PullSource) else parse_pull_uri(uri)
    dest = Path(os.path.abspath(dest))  # `.` has a name and a parent
    if dest.is_symlink() and dest.is_dir():  # a link to a volume: fill the volume, keep the link
        dest = Path(os.path.realpath(dest))
    warn_leftovers(dest)
    check_destination(dest, force)
    options = options or S3Options()
    client = client or make_client(options)
    base = source.base
    with translate_errors(f"pulling from {base.uri()}", base.bucket):
        client.head_bucket(Bucket=base.bucket)

    expected_manifest_sha = None
    run_id = source.run_id
    if run_id is None:
        current = read_pointer(client, base)
        if current is None:
            raise PointerNotFound(f"no `latest` pointer at {base.uri(POINTER_NAME)}: nothing published "
                                  "there (or give .../runs/<id>)")
        run_id, expected_manifest_sha = current[0].run_id, current[0].manifest_sha256
    run = base.run(run_id)

    objects = list_run(client, run)
    manifest = read_manifest(client, run, expected_manifest_sha)
    check_listing(run, manifest, objects)

    # An empty DIR (the current directory, a volume's mount point) is filled where it is, from a
    # staging dir inside it: same filesystem, and DIR itself is neither removed nor replaced.
    # So is a mount point to replace: it cannot be renamed, and its parent is another filesystem.
    in_place = dest.is_dir() and (not contents(dest) or os.path.ismount(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest if in_place else dest.parent))
    try:
        download_verified(client, run, manifest, staging, options)
        staging.chmod(0o755)  # mkdtemp makes it 0700; DIR should read like any other directory
        if in_place:
            fill(staging, dest, force)
        else:
            install(staging, dest, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PullResult(run_id=run_id, run_uri=run.uri() + "/", directory=dest, manifest=manifest)


def contents(dest: Path) -> list[Path]:
    """What is in the directory `dest`, except a volume's own lost+found (root's, left alone)."""
    return [p for p in dest.iterdir() if not (p.name == "lost+found" and os.path.ismount(dest))]


def check_destination(dest: Path, force: bool) -> None:
    """DestinationNotEmpty unless `dest` is absent, an empty directory, or (force) a checkpoint to replace."""
    if not (dest.exists() or dest.is_symlink()) or (dest.is_dir() and not dest.is_symlink() and not contents(dest)):
        return
    if not dest.is_dir() or dest.is_symlink():
        raise DestinationNotEmpty(f"{dest} is a file, not a directory: choose another destination")
    if not is_checkpoint(dest):  # --force on a mistyped path (a home directory) must not delete it
        raise DestinationNotEmpty(f"{dest} holds files but no checkpoint (config.json and *.safetensors), so it "
                                  "is not replaced, --force or not: remove it yourself or choose another directory")
    if not force:
        raise DestinationNotEmpty(f"{dest} holds a checkpoint: --force replaces it (whole: files the run does "
                                  "not have go too), or choose another directory")


def warn_leftovers(dest: Path) -> None:
    """Say so when pulls killed outright (SIGKILL) left their staging dirs beside or in `dest`."""
    places = [dest.parent] + ([dest] if dest.is_dir() and not dest.is_symlink() else [])
    left = [p for place in places for kind in ("pull", "old") for p in place.glob(f".{dest.name}.{kind}-*")
            if p.is_dir()]
    if left:
        print(f"dultra: note: {len(left)} unfinished pull(s) left {', '.join(map(str, left[:3]))} (an .old-* "
              "one holds the checkpoint it was replacing): remove them when no pull is running", file=sys.stderr)


def list_run(client, run: S3Location) -> dict[str, int]:
    """Relative path -> size of every object under the run prefix (manifest included)."""
    objects: dict[str, int] = {}
    prefix = run.key() + "/"
    with translate_errors(f"listing {run.uri()}/", run.bucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=run.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if rel and not rel.endswith("/"):  # "folder" markers some S3 tools create
                    objects[rel] = obj["Size"]
    if not objects:
        raise RunNotFound(f"no run at {run.uri()}/")
    return objects


def read_manifest(client, run: S3Location, expected_sha256: str | None = None) -> Manifest:
    """The run's manifest, checked against `expected_sha256` (what `latest` recorded) when given.
    IncompleteRun without one; IntegrityError when it is malformed or another run's."""
    where = run.uri(MANIFEST_NAME)
    with translate_errors(f"reading {where}", run.bucket):
        try:
            raw = client.get_object(Bucket=run.bucket, Key=run.key(MANIFEST_NAME))["Body"].read()
        except ClientError as err:
            if is_not_found(err):
                raise IncompleteRun(f"{run.uri()}/ has no {MANIFEST_NAME}: its publish did not finish "
                                    "(killed, or still running); refusing a partial checkpoint") from None
            raise
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise IntegrityError(f"{where} is not the manifest `latest` recorded (sha256 differs): "
                             "it was modified after publishing")
    manifest = Manifest.from_json(raw, where)
    if manifest.run_id != run.prefix.rsplit("/", 1)[-1]:
        raise IntegrityError(f"{where} belongs to run {manifest.run_id!r}, not to this one")
    return manifest


def check_listing(run: S3Location, manifest: Manifest, objects: dict[str, int]) -> None:
    """Before downloading anything: same set of files, same sizes."""
    listed = {path: size for path, size in objects.items() if path != MANIFEST_NAME}
    expected = {f.path: f.size for f in manifest.files}
    if missing := sorted(expected.keys() - listed.keys()):
        raise IncompleteRun(f"{run.uri()}/ lacks {len(missing)} file(s) of its manifest: {', '.join(missing[:5])}")
    if extra := sorted(listed.keys() - expected.keys()):
        raise IntegrityError(f"{run.uri()}/ holds {len(extra)} object(s) its manifest does not list: "
                             f"{', '.join(extra[:5])}")
    for path, size in expected.items():
        if listed[path] != size:
            raise ChecksumMismatch(f"{run.uri(path)} is {listed[path]} bytes; the manifest says {size}")


def download_verified(client, run: S3Location, manifest: Manifest, staging: Path, options: S3Options) -> None:
    """Every file into `staging`, then every file checked against the manifest (a bar each)."""
    transfer = options.transfer_config()
    with ByteProgress(manifest.total_bytes, f"pull {manifest.run_id}", options.progress) as progress:
        for entry in manifest.files:
            target = staging / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with translate_errors(f"downloading {run.uri(entry.path)}", run.bucket):
                client.download_file(run.bucket, run.key(entry.path), str(target), Config=transfer,
                                     Callback=progress)
    with ByteProgress(manifest.total_bytes, "verify", options.progress) as progress:
        for entry in manifest.files:
            verify_file(staging / entry.path, entry, run.uri(entry.path), progress)


def verify_file(path: Path, entry: FileEntry, where: str, progress: ByteProgress | None = None) -> None:
    size = path.stat().st_size
    if size != entry.size:
        raise ChecksumMismatch(f"{where}: downloaded {size} bytes; the manifest says {entry.size}")
    digest = sha256_file(path, progress)
    if digest != entry.sha256:
        raise ChecksumMismatch(f"{where}: sha256 {digest[:12]}... differs from the manifest's "
                               f"{entry.sha256[:12]}...; the object was modified or corrupted")


def fill(staging: Path, dest: Path, force: bool) -> None:
    """Move the verified files from `staging` (inside `dest`) up into `dest`. What `dest` held
    (a checkpoint, with force) first goes into an `.old-*` dir beside `staging`, removed last;
    if any of it cannot move, what moved goes back and `dest` is left as it was."""
    others = [p for p in contents(dest) if p != staging]
    old = None
    if others:
        if not force or not is_checkpoint(dest):
            raise DestinationNotEmpty(f"{dest} gained {', '.join(p.name for p in others[:3])} while pulling: "
                                      "pull again into an empty directory")
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest))
        moved = []
        try:
            for path in others:
                os.rename(path, old / path.name)
                moved.append(path)
        except OSError as err:
            for path in reversed(moved):
                os.rename(old / path.name, path)
            old.rmdir()
            raise DestinationNotEmpty(f"cannot replace {dest}: {err.strerror or err}: {err.filename}; it is "
                                      "unchanged") from None
    for entry in staging.iterdir():
        os.rename(entry, dest / entry.name)
    staging.rmdir()
    if old is not None:
        shutil.rmtree(old)


def install(staging: Path, dest: Path, force: bool) -> None:
    """Rename the verified `staging` to `dest`; a replaced `dest` is removed only afterwards."""
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        dest.rmdir()
    if not dest.exists() and not dest.is_symlink():
        os.rename(staging, dest)
        return
    check_destination(dest, force)  # something may have appeared at dest while we were downloading
    old = dest.with_name(f".{dest.name}.old-{secrets.token_hex(4)}")
    os.rename(dest, old)
    os.rename(staging, dest)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()
