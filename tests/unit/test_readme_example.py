"""The README's Python example runs as written, on the tiny default and the CPU."""

from __future__ import annotations

import re
from pathlib import Path

from dultra.model.loading import resolve

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_python_example_runs():
    code, = re.findall(r"```python\n(.*?)```", README, re.S)
    # Only where it runs changes: the tiny default, float32 on the CPU, no CUDA graphs.
    for gpu, cpu in (('"path/to/dUltra-math"', repr(str(resolve("tiny")))), ("torch.bfloat16", "torch.float32"),
                     ('device="cuda"', 'device="cpu"'), (".cuda()", ""), ("compile=True", "compile=False")):
        assert gpu in code, f"the README example lost {gpu}: update this test"
        code = code.replace(gpu, cpu)
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    out, tok = names["out"], names["tok"]
    assert out.nfe.shape == (1,) and 1 <= int(out.nfe[0]) <= 256
    assert isinstance(out.texts(tok)[0], str)
