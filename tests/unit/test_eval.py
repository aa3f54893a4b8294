"""Evaluation: batch invariance, resume, the report, scoring of real answers, unscored samples."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import replace

import httpx
import pytest

from dultra.data import load_task, write_examples
from dultra.decoding import DecodeConfig, PlannerGreedy, Threshold
from dultra.decoding.graphs import captured_steps
from dultra.errors import ConfigError, DataError
from dultra.eval import evaluate
from dultra.eval.accuracy import COMPILED_PROMPT_MULTIPLE, SampleRecord, _compiled_width, _scores
from dultra.eval.config import EvalConfig
from dultra.eval.report import nfe_rule, pareto_figure, summarize
from dultra.eval.run import EvalError, run_evaluation, split_strategies, with_lengths
from dultra.model.loading import TRAINING_RECORD, load
from dultra.rewards import SandboxUnavailable
from tests.data_helpers import GSM8K
from tests.helpers import free_port, save_small_checkpoint
from tests.reward_helpers import SubprocessRunner
from tests.scripted_http import scripted_server

CFG = DecodeConfig(gen_length=32, block_length=8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_tokenizer):
    return save_small_checkpoint(tmp_path_factory.mktemp("eval") / "m", tiny_tokenizer)


def _eval_cfg(ckpt, out, **kw):
    base = dict(model=str(ckpt), task="synthetic-math", limit=6, gen_length=32, block_length=8, batch_size=4,
                strategies="planner:factor=1.0;threshold:tau=0.5", output_dir=str(out))
    return EvalConfig(**{**base, **kw})


def test_batch_size_does_not_change_greedy_results(ckpt):
    model, tok = load(ckpt)
    examples = load_task("synthetic-math", "test", limit=7)
    for strategy in (PlannerGreedy(1.0), Threshold(0.5)):
        one = evaluate(model, tok, examples, strategy, CFG, batch_size=1)
        many = evaluate(model, tok, examples, strategy, CFG, batch_size=4)
        assert [(r.completion, r.nfe, r.correct) for r in one.records] == \
               [(r.completion, r.nfe, r.correct) for r in many.records]


def test_evaluate_refuses_what_it_cannot_score(ckpt):
    model, tok = load(ckpt)
    with pytest.raises(DataError, match="no examples to evaluate"):
        evaluate(model, tok, [], Threshold(0.5), CFG)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        evaluate(model, tok, load_task("synthetic-math", "test", limit=1), Threshold(0.5), CFG, batch_size=0)
    with pytest.raises(ConfigError, match=r"code examples are scored by running them: pass code_runner="):
        evaluate(model, tok, load_task("synthetic-code", "test", limit=1), Threshold(0.5), CFG)  # all unscored before


def test_compiled_evaluation_shares_padded_prompt_widths_and_decodes_as_eager(ckpt):
    model, tok = load(ckpt)
    examples = load_task("synthetic-math", "test", limit=6)
    for strategy in (PlannerGreedy(1.0), Threshold(0.5)):
        eager = evaluate(model, tok, examples, strategy, CFG, batch_size=4)
        compiled = evaluate(model, tok, examples, strategy, replace(CFG, compile=True), batch_size=4)
        assert [(r.completion, r.nfe) for r in compiled.records] == [(r.completion, r.nfe) for r in eager.records]
    widths = {length - CFG.gen_length for _, length in captured_steps(model).batch_shapes}
    assert widths == {COMPILED_PROMPT_MULTIPLE}  # synthetic prompts are shorter: one width for all


def test_a_compiled_prompt_width_rounds_up_within_the_context():
    assert _compiled_width(70, context=1024, gen_length=256) == 128
    assert _compiled_width(700, context=1024, gen_length=256) == 704
    assert _compiled_width(740, context=1000, gen_length=256) == 744  # not 768: the context leaves 744
    assert _compiled_width(800, context=1024, gen_length=256) == 800  # too long already: check_layout says so


def test_interrupted_run_resumes_from_its_samples(ckpt, tmp_path, monkeypatch):
    whole = run_evaluation(_eval_cfg(ckpt, tmp_path / "whole"))
    import dultra.eval.run as run_module

    calls = {"n": 0}
    real = run_module.evaluate

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the warm-up and the first strategy, the second dies before finishing
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(_eval_cfg(ckpt, tmp_path / "resumed"))
    saved = (tmp_path / "resumed" / "samples.jsonl").read_text().splitlines()
    assert len(saved) == 6  # the first strategy's samples survived; the warm-up's were never saved
    decoded = []
    monkeypatch.setattr(run_module, "evaluate", lambda m, t, todo, *a, **k: decoded.append(len(todo)) or real(m, t, todo, *a, **k))
    resumed = run_evaluation(_eval_cfg(ckpt, tmp_path / "resumed", batch_size=3))  # batch size may change
    assert decoded == [3, 6]  # an untimed warm-up batch, then only the unfinished strategy
    speed = ("tokens_per_s", "latency_s", "batch_size", "timed_samples")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in speed} for r in rows]  # noqa: E731
    assert strip(resumed["rows"]) == strip(whole["rows"])
    assert [r["batch_size"] for r in resumed["rows"]] == [4, 3]
    run_evaluation(_eval_cfg(ckpt, tmp_path / "resumed"))
    assert decoded == [3, 6]  # nothing left: no warm-up either
    with pytest.raises(ConfigError, match=r"other settings \(limit differ\)"):
        run_evaluation(_eval_cfg(ckpt, tmp_path / "resumed", limit=5))


def test_the_default_strategies_fit_any_gen_length(ckpt, tmp_path):
    result = run_evaluation(_eval_cfg(ckpt, tmp_path, limit=1, strategies=EvalConfig.strategies, warmup=False))
    assert "low-confidence:steps=32" in [r["strategy"] for r in result["rows"]]  # {gen} is gen_length (32)


def test_a_dultra_trained_checkpoint_is_evaluated_at_its_trained_lengths(ckpt, tmp_path, capsys):
    trained = tmp_path / "grpo"
    shutil.copytree(ckpt, trained)
    (trained / TRAINING_RECORD).write_text(json.dumps({"stage": "grpo", "steps": 2,
                                                       "config": {"gen_length": 16, "block_length": 4}}))
    unset = dict(gen_length=None, block_length=None, limit=1, warmup=False, strategies="low-confidence:steps={gen}")
    result = run_evaluation(_eval_cfg(trained, tmp_path / "a", **unset))
    assert result["metadata"]["settings"]["gen_length"] == 16 and result["metadata"]["settings"]["block_length"] == 4
    assert [r["strategy"] for r in result["rows"]] == ["low-confidence:steps=16"]
    assert f"eval: gen_length 16 and block_length 4 as {trained} was trained" in capsys.readouterr().err
    one_given = with_lengths(_eval_cfg(trained, tmp_path, gen_length=None, block_length=8), trained)
    assert (one_given.gen_length, one_given.block_length) == (16, 8)
    assert f"eval: gen_length 16 as {trained} was trained" in capsys.readouterr().err
    both_given = with_lengths(_eval_cfg(trained, tmp_path, gen_length=32, block_length=8), trained)
    assert (both_given.gen_length, both_given.block_length) == (32, 8) and not capsys.readouterr().err
    no_record = with_lengths(_eval_cfg(ckpt, tmp_path, gen_length=None, block_length=None), ckpt)
    assert (no_record.gen_length, no_record.block_length) == (256, 32)
    (trained / TRAINING_RECORD).write_text(json.dumps({"stage": "pretrain", "config": {"gen_length": 16}}))
    pretrained = with_lengths(_eval_cfg(trained, tmp_path, gen_length=None, block_length=None), trained)
    assert (pretrained.gen_length, pretrained.block_length) == (16, 16)  # no blocks in pretraining: one
    assert f"eval: gen_length 16 and block_length 16 as {trained} was trained" in capsys.readouterr().err
    longer = with_lengths(_eval_cfg(trained, tmp_path, gen_length=32, block_length=None), trained)
    assert (longer.gen_length, longer.block_length) == (32, 32)


def test_a_hub_id_is_evaluated_at_the_lengths_its_snapshot_was_trained_with(ckpt, tmp_path, monkeypatch):
    """`generate` and `compare` read them; eval looked for the record under the id, not the snapshot."""
    import huggingface_hub.constants as hub

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--owner--trained"
    shutil.copytree(ckpt, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / TRAINING_RECORD).write_text(json.dumps(
        {"stage": "grpo", "steps": 2, "config": {"gen_length": 16, "block_length": 4}}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    result = run_evaluation(_eval_cfg("owner/trained", tmp_path / "out", gen_length=None, block_length=None, limit=1,
                                      warmup=False, strategies="threshold:tau=0.5"))
    assert (result["metadata"]["settings"]["gen_length"], result["metadata"]["settings"]["block_length"]) == (16, 4)


def test_repeated_example_ids_are_refused(ckpt, tmp_path):
    """Samples are recorded and resumed by id: a resume skipped the second of two."""
    examples = load_task("synthetic-math", "test", limit=3)
    data = write_examples([examples[0], examples[1], replace(examples[2], id=examples[0].id)], tmp_path / "d.jsonl")
    with pytest.raises(DataError, match=f"example ids repeat in .*d.jsonl \\({examples[0].id}\\)"):
        run_evaluation(_eval_cfg(ckpt, tmp_path / "out", examples=str(data)))


def test_pareto_labels_of_close_settings_do_not_overlap():
    def row(strategy, nfe, accuracy):
        return {"strategy": strategy, "method": strategy.partition(":")[0], "nfe": nfe, "accuracy": accuracy}

    rows = [row("threshold:tau=0.9", 6.7, 81.2), row("threshold:tau=0.95", 6.9, 81.2),
            row("threshold:tau=0.8", 6.3, 79.9), row("factor:factor=1.0", 6.2, 77.6),
            row("planner:factor=1.0", 4.3, 81.5), row("planner:factor=1.001", 3.4, 82.1)]
    fig = pareto_figure(rows, "t")
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(r["strategy"].partition(":")[2] for r in rows)
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    points = ax.transData.transform([(r["nfe"], r["accuracy"]) for r in rows])
    assert not [(box, p) for box in boxes for p in points if box.contains(*p)]  # no label hides a point


def test_report_files_are_readable(ckpt, tmp_path):
    result = run_evaluation(_eval_cfg(ckpt, tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["strategy"] for r in report["strategies"]] == ["planner:factor=1.0", "threshold:tau=0.5"]
    meta = report["metadata"]
    for key in ("model_sha256", "tokenizer_sha256", "data_sha256", "chat_template", "device", "versions"):
        assert meta[key], key
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert len(re.findall(r"<tr><td>(planner|threshold):", page)) == 2 and "data:image/png;base64," in page
    assert set(result["methods"]) == {"planner", "threshold"} and meta["greedy"] is True
    sampled = run_evaluation(_eval_cfg(ckpt, tmp_path / "sampled", limit=2, strategies="planner-sample", warmup=False))
    assert sampled["metadata"]["greedy"] is False  # planner-sample draws the positions it reveals
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"id", "completion", "extracted", "correct", "nfe"} <= set(records[0])


def test_prepared_examples_name_their_own_task(ckpt, tmp_path):
    write_examples(load_task("synthetic-code", "test", limit=2), tmp_path / "test.jsonl")
    cfg = _eval_cfg(ckpt, tmp_path / "out", examples=str(tmp_path / "test.jsonl"), task="gsm8k",
                    strategies="threshold:tau=0.5")
    meta = run_evaluation(cfg)["metadata"]
    assert (meta["task"], meta["split"], meta["examples"]) == ("synthetic-code", None, 2)
    assert "<h2>synthetic-code — " in (tmp_path / "out" / "report.html").read_text()


def test_speed_comes_from_one_batch_size_when_a_resumed_run_changed_it():
    def record(i, batch_size, latency):
        return SampleRecord(strategy="threshold:tau=0.9", id=str(i), completion="", extracted=None, reference="1",
                            score=1.0, correct=True, nfe=2, tokens=10, latency_s=latency, batch_size=batch_size)

    # 3 samples decoded in batches of 3 (0.1 s each), 3 of 1 after a resume (0.5 s each), 1 left over.
    recs = [record(i, 3, 0.1) for i in range(3)] + [record(i, 1, 0.5) for i in range(3, 6)] + [record(6, 1, 0.5)]
    (row,) = summarize(recs)
    assert (row["batch_size"], row["timed_samples"], row["samples"]) == (1, 4, 7)
    assert row["tokens_per_s"] == pytest.approx(20.0) and row["latency_s"] == pytest.approx(0.5)
    assert row["nfe"] == 2 and row["accuracy"] == 100.0  # quality counts every sample


def test_the_report_says_how_a_cache_counts_forward_passes(ckpt, tmp_path):
    assert "refreshes" not in nfe_rule("none") and "block and what follows" in nfe_rule("prefix")
    run_evaluation(_eval_cfg(ckpt, tmp_path, limit=2, strategies="threshold:tau=0.5", cache="dual", warmup=False))
    rule = json.loads((tmp_path / "report.json").read_text())["rules"]["nfe"]
    assert rule == nfe_rule("dual") and "dual cache" in rule
    assert "dual cache" in (tmp_path / "report.html").read_text()


def test_real_gsm8k_answers_are_judged_and_malformed_ones_are_wrong():
    examples = load_task("gsm8k", "test", path=str(GSM8K), limit=3)
    texts = ["She makes 9 * 2 = 18 dollars.\n#### 18", "#### 17", "I am not sure <<<"]
    assert _scores(texts, examples[:1] * 3, None) == [1.0, 0.0, 0.0]


def test_humaneval_canonical_passes_and_broken_fails():
    runner = SubprocessRunner()
    ex = load_task("humaneval", "test", limit=1)[0]
    good = ex.solution  # the canonical solution, in the fenced format the prompt asks for
    assert "```python" in good
    broken = "```python\ndef nothing():\n    return None\n```"
    assert _scores([good, broken], [ex, ex], runner) == [1.0, 0.0]


def _down(request: httpx.Request) -> httpx.Response:
    """A sandbox service that is up (answers /readyz) but cannot run anything."""
    return httpx.Response(200 if request.url.path == "/readyz" else 503, json={})


def test_a_sandbox_outage_leaves_samples_unscored_and_fails_the_run(ckpt, tmp_path, monkeypatch):
    import dultra.eval.accuracy as accuracy

    # The untrained model writes no code block (judged wrong without running anything): wrap
    # its text in one so every sample reaches the (failing) sandbox.
    real = accuracy._scores
    monkeypatch.setattr(accuracy, "_scores", lambda texts, batch, runner: real(
        [f"```python\n{t}\n```" for t in texts], batch, runner))
    with scripted_server(_down) as server:
        cfg = _eval_cfg(ckpt, tmp_path, task="synthetic-code", limit=3, strategies="threshold:tau=0.5",
                        sandbox_url=server.url)
        with pytest.raises(EvalError, match="could not be scored"):
            run_evaluation(cfg)
        deadline = time.monotonic() + 10
        while server.closed < server.opened and time.monotonic() < deadline:  # the server sees the closes
            time.sleep(0.01)
        assert server.opened > 0 and server.closed == server.opened  # no connection outlives the evaluation
    row = json.loads((tmp_path / "report.json").read_text())["strategies"][0]
    assert row["samples"] == 3 and row["unscored"] == 3


def test_an_unreachable_sandbox_fails_before_any_decoding(ckpt, tmp_path):
    cfg = _eval_cfg(ckpt, tmp_path / "out", task="synthetic-code", limit=2,
                    sandbox_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SandboxUnavailable, match="unreachable"):
        run_evaluation(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, error, message", [
    (dict(batch_size=0), ConfigError, "batch_size must be >= 1"),
    (dict(limit=-1), ConfigError, "limit must be >= 0"),
    (dict(device="meta"), ConfigError, "runs on cpu, cuda or mps"),
    (dict(device="bogus"), ConfigError, "not a torch device"),
    (dict(output_dir="FILE"), ConfigError, "is a file, not a directory"),
    (dict(examples="EMPTY"), DataError, "no examples to evaluate"),
    (dict(aup_y_max=0.78), ConfigError, "aup_y_max is an accuracy in % \\(77.7, not 0.777\\)"),
])
def test_bad_settings_are_one_line_errors_before_loading(ckpt, tmp_path, change, error, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    paths = {"FILE": str(tmp_path / "file"), "EMPTY": str(tmp_path / "empty.jsonl")}
    change = {k: paths.get(v, v) for k, v in change.items()}
    with pytest.raises(error, match=message):
        run_evaluation(_eval_cfg(ckpt, tmp_path / "out", **change))


def test_an_unreadable_settings_file_is_a_clear_error(ckpt, tmp_path):
    (tmp_path / "settings.json").write_text('{"cut sho')
    with pytest.raises(ConfigError, match="settings.json is unreadable"):
        run_evaluation(_eval_cfg(ckpt, tmp_path, limit=1))


def test_strategy_lists_split_on_commas_and_semicolons():
    assert split_strategies("planner:factor=1.0,threshold:tau=0.9;entropy", 64) == \
        ["planner:factor=1.0", "threshold:tau=0.9", "entropy"]
    assert split_strategies("low-confidence:steps={gen},factor:factor=1.0,official=true", 64) == \
        ["low-confidence:steps=64", "factor:factor=1.0,official=true"]


def test_a_gen_length_too_short_for_the_answers_is_named(ckpt, tmp_path, capsys):
    run_evaluation(_eval_cfg(ckpt, tmp_path, limit=2, gen_length=8, block_length=8, warmup=False))
    assert re.search(r"eval: warning: 2 of 2 reference solutions take more than gen_length 8 tokens with their EOS "
                     r"\(up to \d+\): raise gen_length", capsys.readouterr().err)
    run_evaluation(_eval_cfg(ckpt, tmp_path / "fits", limit=2, warmup=False))  # gen 32: they fit
    assert "warning" not in capsys.readouterr().err
