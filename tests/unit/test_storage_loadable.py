"""What publish checks before uploading a checkpoint: pytest tests/unit/test_storage_loadable.py"""

import json
import struct

import pytest

from dultra.storage.errors import NotACheckpoint
from dultra.storage.loadable import check_loadable, check_safetensors


def safetensors_bytes(offsets: dict[str, list[int]], data: int, metadata: dict | None = None) -> bytes:
    """A safetensors file whose header gives each tensor `offsets`, followed by `data` bytes."""
    header = {name: {"dtype": "U8", "shape": [end - begin], "data_offsets": [begin, end]}
              for name, (begin, end) in offsets.items()}
    raw = json.dumps({**({"__metadata__": metadata} if metadata else {}), **header}).encode()
    raw += b" " * (-len(raw) % 8)  # the padding the safetensors library writes
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data


def checkpoint(path, weights: dict[str, bytes], config=None):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llada"}))
    for name, content in weights.items():
        (path / name).write_bytes(content)
    return path


def test_whole_files_pass(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(safetensors_bytes({"b": [4, 10], "a": [0, 4]}, 10, {"format": "pt"}))
    (tmp_path / "empty.safetensors").write_bytes(safetensors_bytes({}, 0))
    (tmp_path / "zero.safetensors").write_bytes(safetensors_bytes({"z": [0, 0], "a": [0, 3]}, 3))
    for name in ("a", "empty", "zero"):
        check_safetensors(tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize("content, message", [
    (b"", "is 0 bytes: too short for a safetensors file"),
    (b"\x10\0\0\0", "is 4 bytes: too short"),
    (safetensors_bytes({"a": [0, 8]}, 7), "its header says .* \\(truncated\\)"),
    (safetensors_bytes({"a": [0, 8]}, 9), "its header says .* \\(extra bytes at the end\\)"),
    (safetensors_bytes({"a": [0, 4], "b": [6, 8]}, 8), "tensor 'b' starts at byte 6 of the data, not at 4"),
    (safetensors_bytes({"a": [0, 4], "b": [2, 8]}, 8), "tensor 'b' starts at byte 2 of the data, not at 4"),
    (safetensors_bytes({"a": [4, 0]}, 4), "tensor 'a' has no valid data_offsets"),
    (struct.pack("<Q", 4) + b"{{{{", "no valid safetensors header \\(not JSON"),
    (struct.pack("<Q", 2) + b"[]", "header is a JSON list, not an object"),
    (struct.pack("<Q", 1 << 40) + b"{}", "header says the header alone is 1099511627776"),
])
def test_broken_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(NotACheckpoint, match=message) as err:
        check_safetensors(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_every_shard_an_index_names_is_checked(tmp_path):
    good = safetensors_bytes({"a": [0, 4]}, 4)
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    ckpt = checkpoint(tmp_path / "c", {"model-1.safetensors": good, "model-2.safetensors": good[:-1],
                                       "model.safetensors.index.json": index.encode()})
    with pytest.raises(NotACheckpoint, match=r"model-2.safetensors is \d+ bytes; its header says \d+ \(truncated\)"):
        check_loadable(ckpt)
    (ckpt / "model-2.safetensors").write_bytes(good)
    check_loadable(ckpt)


@pytest.mark.parametrize("weight_map, message", [
    ({"a": "../model.safetensors"}, "names shard '../model.safetensors' outside"),
    ({"a": 3}, "has no weight_map of tensor name -> shard file name"),
    (["model.safetensors"], "has no weight_map"),
])
def test_a_bad_index_is_refused(tmp_path, weight_map, message):
    weights = {"model.safetensors": safetensors_bytes({}, 0),
               "model.safetensors.index.json": json.dumps({"weight_map": weight_map}).encode()}
    with pytest.raises(NotACheckpoint, match=message):
        check_loadable(checkpoint(tmp_path / "c", weights))


def test_config_must_be_a_llada_config(tmp_path):
    ckpt = checkpoint(tmp_path / "c", {"model.safetensors": safetensors_bytes({}, 0)}, {"model_type": "llada"})
    check_loadable(ckpt)
    (ckpt / "config.json").write_bytes(b"\xff{")
    with pytest.raises(NotACheckpoint, match="config.json is not valid JSON"):
        check_loadable(ckpt)
