"""The executor's clean-up of what a run leaves in its working dir.

    .venv/bin/python -m pytest -q tests/unit/test_sandbox_cleanup.py
"""

from __future__ import annotations

import os

from sandbox.executor import _remove_tree


def _deep_tree(root, depth: int, name: str) -> None:
    """depth nested dirs of `name`, a file in each, built through descriptors (past PATH_MAX)."""
    os.mkdir(root)
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        sub = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = sub
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.symlink("/etc", "link", dir_fd=fd)  # removed as a link, never followed
    os.close(fd)


def test_a_tree_deeper_than_recursion_and_path_max_allow_is_removed(tmp_path):
    root = tmp_path / "left"
    _deep_tree(root, 1500, "n" * 100)  # 1500 levels, 150 kB of path
    os.chmod(root / ("n" * 100), 0o000)  # locked by the run
    _remove_tree(str(root))
    assert not root.exists() and os.path.isdir("/etc")


def test_files_and_links_are_removed_as_themselves(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    _remove_tree(str(tmp_path / "link"))
    _remove_tree(str(tmp_path / "missing"))
    assert (tmp_path / "file").exists() and not (tmp_path / "link").exists()
    _remove_tree(str(tmp_path / "file"))
    assert not (tmp_path / "file").exists()
