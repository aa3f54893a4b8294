"""Raw rows of a dataset, from local files (offline) or the Hugging Face Hub (production).

    rows = read_local("../shared/data/gsm8k", "test")          # test.jsonl in that folder
    rows = read_local("math500.parquet", "test")               # one file: the split is ignored
    rows = read_hub("openai/gsm8k", "main", "test")            # needs network and `datasets`

A local path is a file (.jsonl, .jsonl.gz, .json, .parquet) or a folder holding the split
as `{split}.jsonl`, `{split}.parquet`, ..., Hub-export shards `{split}-*.parquet` (directly
or under `data/`), or a `{split}/` folder of shards (the Hub's parquet export of a config).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from dultra.errors import DataError, first_line

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def _read_file(path: Path) -> list[dict[str, Any]]:
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq  # installed with `datasets`

        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith(".json"):
            rows = json.load(f)
            if not isinstance(rows, list):
                raise DataError(f"{path}: a .json data file must hold a list of records")
            return rows
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{n}: not JSON ({err.msg})") from None
        return rows


def split_files(folder: Path, split: str) -> list[Path]:
    """The files of `split` inside a dataset folder (exact names first, then shards)."""
    for base in (folder, folder / "data"):
        exact = [base / f"{split}{s}" for s in SUFFIXES if (base / f"{split}{s}").is_file()]
        if exact:
            return exact[:1]
        shards = sorted(p for p in base.glob(f"{split}-*") if p.name.endswith(SUFFIXES))
        if shards:
            return shards
        if (base / split).is_dir() and (shards := sorted(p for p in (base / split).iterdir()
                                                         if p.is_file() and p.name.endswith(SUFFIXES))):
            return shards  # refs/convert/parquet: {config}/{split}/0000.parquet, ...
    return []


def read_local(path: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split from a local file or dataset folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = split_files(path, split)
        if not files:
            raise DataError(
                f"no '{split}' split in {path}: expected {split}.jsonl, {split}.parquet, ..., "
                f"{split}-*.parquet shards or a {split}/ folder of them"
            )
    elif path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise DataError(f"{path}: unsupported data file (use one of {', '.join(SUFFIXES)})")
        files = [path]
    else:
        raise DataError(f"no data file or folder at {path}")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            part = _read_file(f)
        except DataError:
            raise
        except (OSError, ValueError, EOFError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"cannot read {f}: {first_line(err)}{_lfs_hint(f)}") from None
        if part and not all(isinstance(r, dict) for r in part):
            raise DataError(f"{f}: every record must be a JSON object")
        rows.extend(part)
    return rows


def _lfs_hint(path: Path) -> str:
    """A clone made without git-lfs holds pointer files where the data should be."""
    with open(path, "rb") as f:
        pointer = f.read(40).startswith(b"version https://git-lfs")
    return "; it is a Git LFS pointer, not the data: run `git lfs pull` in the clone" if pointer else ""


def read_hub(
    repo: str, config: str | None, split: str, revision: str | None = None
) -> list[dict[str, Any]]:
    """Rows of one split of a Hugging Face Hub dataset (downloads on first use)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    from dultra.model.hub import is_hub_id, no_answer

    try:
        import datasets
    except ImportError:  # the GPU image has no `datasets`: point at local files instead
        raise DataError(
            f"loading {repo} from the Hub needs the `datasets` package; pass a local path instead"
        ) from None
    try:
        online = not datasets.config.HF_HUB_OFFLINE and is_hub_id(repo) and not Path(repo).exists()
        silence = no_answer(repo, "dataset", revision) if online else None
        ds = None if silence else datasets.load_dataset(repo, config, split=split, revision=revision)
    except (FileNotFoundError, ValueError, ConnectionError, HfHubHTTPError) as err:
        raise DataError(f"cannot load split '{split}' of {repo} from the Hub: {err}") from err
    except RuntimeError as err:  # datasets >= 4 refuses loading scripts (codeparrot/apps has one)
        raise DataError(f"cannot load {repo} from the Hub: {first_line(err)}; download its parquet export "
                        "(revision refs/convert/parquet) and pass that folder as the data path") from None
    if ds is None:
        raise DataError(f"cannot load {repo}: the Hugging Face Hub ({constants.ENDPOINT}) did not answer, {silence}; "
                        "set HF_HUB_OFFLINE=1 to use a cached copy, or pass a local path")
    return ds.to_list()
