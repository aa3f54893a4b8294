"""Packages that import their torch modules only when one of their names is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dultra.lazy import lazy_exports


@pytest.mark.parametrize("package", ["dultra.rewards", "dultra.eval"])
def test_every_exported_name_resolves_and_is_listed(package):
    names = __import__(package, fromlist=["__all__"])
    for name in names.__all__:
        assert getattr(names, name) is not None, name
    assert set(names.__all__) <= set(dir(names))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        names.nothing  # noqa: B018


def test_a_light_module_of_the_package_imports_no_torch():
    code = "import sys, dultra.rewards.combine, dultra.eval.config\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout == "False\n", out.stderr


def test_a_name_that_is_also_a_module_is_refused():
    """`combine` the function would turn into `combine` the module once that module is imported."""
    with pytest.raises(ValueError, match=r"\['combine'\] are module names"):
        lazy_exports("dultra.rewards", {"combine": ("combine",)})
