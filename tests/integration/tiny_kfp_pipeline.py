"""A one-step KFP pipeline named `tiny`, for upload tests; its parameters are those the tests pass.

    compile_tiny_pipeline(tmp_path / "tiny_pipeline.yaml")
"""

# No `from __future__ import annotations`: kfp reads the real annotation objects.

from kfp import compiler, dsl  # tests may use kfp; the dultra package may not


@dsl.component(base_image="python:3.12-slim")
def add(a: int, b: float) -> float:
    return a + b


@dsl.pipeline(name="tiny", description="stand-in for the dultra pipeline")
def tiny(a: int = 1, b: float = 2.0, task: str = "", flag: bool = False, code: str = "", dest: str = "",
         empty: str = "", obj: dict = {}):  # noqa: B006 (kfp reads the default; nothing mutates it)
    add(a=a, b=b)


def compile_tiny_pipeline(path) -> None:
    compiler.Compiler().compile(pipeline_func=tiny, package_path=str(path))
