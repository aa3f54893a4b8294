"""Cheap checks that a checkpoint directory would load, run by `publish` before any upload.

    from dultra.storage.loadable import check_loadable
    check_loadable(Path("./ckpt"))   # NotACheckpoint naming the file and what is wrong

`manifest.is_checkpoint` only sees that the files exist; a copy cut short (a 0-byte or
truncated model.safetensors) or a hand-edited config.json passes it, and `latest` would
then name a run that `pull` verifies but nothing can load. What this checks, without torch
and without reading the weights: config.json is a JSON object whose model_type is "llada"
(or absent, as loading allows); each *.safetensors file (and every shard an index names) has
a readable header whose tensors' byte ranges tile the data section and end exactly at the
end of the file. What it does not check: that a tensor's byte range matches its dtype and shape, that the tensors are
the ones the model expects, or the config's field values (loading reports those).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from dultra.storage.errors import NotACheckpoint

MODEL_TYPE = "llada"  # LLaDAConfig.model_type (dultra/model/config.py); not imported: that pulls in transformers
_MAX_HEADER = 100_000_000  # bytes; the safetensors library refuses larger headers too


def check_loadable(directory: Path) -> None:
    """NotACheckpoint unless config.json and every safetensors file in `directory` pass."""
    check_config(directory / "config.json")
    for path in weight_files(directory):
        check_safetensors(path)


def check_config(path: Path) -> None:
    """config.json must be a JSON object with model_type "llada" or none (what `dultra` loads)."""
    try:
        config = json.loads(path.read_bytes())
    except OSError as err:
        raise NotACheckpoint(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:  # UnicodeDecodeError is one too
        raise NotACheckpoint(f"{path} is not valid JSON ({err}); not publishing a config nothing can load") from None
    if not isinstance(config, dict):
        raise NotACheckpoint(f"{path} holds a JSON {type(config).__name__}, not a model config object")
    kind = config.get("model_type")
    if kind not in (None, MODEL_TYPE):  # none: loading takes it as LLaDA's too
        raise NotACheckpoint(f"{path} has model_type {kind!r}; a LLaDA or dUltra checkpoint's is {MODEL_TYPE!r}")


def weight_files(directory: Path) -> list[Path]:
    """The *.safetensors files beside config.json and every shard a *.safetensors.index.json
    names (`is_checkpoint` has checked those exist), each once, sorted."""
    shards = set(directory.glob("*.safetensors"))
    for index in directory.glob("*.safetensors.index.json"):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map")
        except (OSError, ValueError, AttributeError) as err:
            raise NotACheckpoint(f"{index} is not a readable safetensors index: {err}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
            raise NotACheckpoint(f"{index} has no weight_map of tensor name -> shard file name")
        if outside := sorted(s for s in set(weight_map.values()) if Path(s).name != s):
            # a shard elsewhere would not be uploaded with the run, so the pulled copy would lack it
            raise NotACheckpoint(f"{index} names shard {outside[0]!r} outside {directory}")
        shards.update(directory / shard for shard in weight_map.values())
    return sorted(shards)


def check_safetensors(path: Path) -> None:
    """The file must be a whole safetensors file: 8-byte little-endian header length N, N
    bytes of JSON header, then exactly the data its tensors' `data_offsets` cover."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = f.read(length) if length is not None and length <= min(size - 8, _MAX_HEADER) else b""
    except OSError as err:
        raise NotACheckpoint(f"cannot read {path}: {err.strerror or err}") from None
    if length is None:
        raise NotACheckpoint(f"{path} is {size} bytes: too short for a safetensors file (an interrupted copy?)")
    if length > size - 8 or length > _MAX_HEADER:
        raise NotACheckpoint(f"{path} is {size} bytes but its header says the header alone is {length}: "
                             "truncated, or not a safetensors file")
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise NotACheckpoint(f"{path} has no valid safetensors header (not JSON: {err})") from None
    end = data_end(header, path)
    if size != 8 + length + end:
        raise NotACheckpoint(f"{path} is {size} bytes; its header says {8 + length + end} "
                             f"({'truncated' if size < 8 + length + end else 'extra bytes at the end'})")


def data_end(header: Any, path: Path) -> int:
    """Bytes of data the header's tensors take: their `data_offsets` [begin, end) must tile
    [0, end) with no gap or overlap, as the safetensors format requires."""
    if not isinstance(header, dict):
        raise NotACheckpoint(f"{path}: its safetensors header is a JSON {type(header).__name__}, not an object")
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise NotACheckpoint(f"{path}: tensor {name!r} has no valid data_offsets [begin, end] in its header")
        ranges.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise NotACheckpoint(f"{path}: tensor {name!r} starts at byte {begin} of the data, not at {end} "
                                 "(a gap or an overlap): not a valid safetensors file")
        end = stop
    return end
