"""The `dultra generate` JSON contract and its one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dultra.cli import COMMANDS, build_parser, main
from dultra.commands import generate as generate_command
from dultra.decoding import STRATEGIES
from dultra.decoding.generate import CACHES
from dultra.model.loading import TRAINING_RECORD, load, load_model, resolve
from tests.helpers import predict_eos, save_small_checkpoint


def _generate(capsys, *extra):
    code = main(["generate", "--model", "tiny", "--prompt", "Compute 3 + 4.", "--gen-length", "32",
                 "--block-length", "8", "--json", *extra])
    out = capsys.readouterr()
    return code, out


@pytest.mark.parametrize("strategy", ["planner", "planner-sample", "threshold", "factor", "low-confidence", "entropy"])
def test_generate_prints_one_json_object(capsys, strategy):
    code, out = _generate(capsys, "--strategy", strategy, "--temperature", "0.5")
    assert code == 0
    result = json.loads(out.out)
    assert {"text", "token_ids", "nfe", "tpf", "seconds"} <= result.keys()
    _, tok = load("tiny")
    ids = result["token_ids"]
    eos = tok.eos_token_id
    assert eos not in ids[:-1]  # ends at the first EOS, which it includes when present
    n_before_eos = len(ids) - (ids[-1] == eos)
    assert 1 <= result["nfe"] <= 32
    assert result["tpf"] == pytest.approx(n_before_eos / result["nfe"], abs=1e-3)
    assert result["text"] == tok.decode(ids[:n_before_eos], skip_special_tokens=True)


def test_a_short_gen_length_alone_decodes_in_one_block(capsys):
    assert main(["generate", "--model", "tiny", "--prompt", "hi", "--gen-length", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["gen_length"], result["block_length"], len(result["token_ids"]) <= 16) == (16, 16, True)


@pytest.fixture(scope="module")
def eos_checkpoint(tmp_path_factory, tiny_tokenizer):
    """A checkpoint whose model decodes EOS first (the tiny model never does, so early stop had nothing to end)."""
    path = save_small_checkpoint(tmp_path_factory.mktemp("eos") / "ckpt", tiny_tokenizer)
    predict_eos(load_model(path)).save_pretrained(path)
    return path


def test_early_stop_ends_at_the_first_eos(capsys, eos_checkpoint, tiny_tokenizer):
    _, plain = _generate(capsys, "--model", str(eos_checkpoint), "--strategy", "threshold")
    _, early = _generate(capsys, "--model", str(eos_checkpoint), "--strategy", "threshold", "--early-stop")
    a, b = json.loads(plain.out), json.loads(early.out)
    assert b["nfe"] < a["nfe"]
    assert b["token_ids"][-1] == tiny_tokenizer.eos_token_id
    assert b["token_ids"] == a["token_ids"]  # the same completion up to its EOS, in fewer steps


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_generate_with_a_cache_reports_it_and_keeps_the_contract(capsys, cache):
    code, out = _generate(capsys, "--strategy", "planner", "--cache", cache)
    result = json.loads(out.out)
    assert code == 0 and result["cache"] == cache
    assert 4 <= result["nfe"] <= 32  # at least one step per block of 8


def test_an_option_of_another_strategy_is_noted_and_its_own_is_used(capsys):
    _, default = _generate(capsys, "--strategy", "threshold")
    _, noted = _generate(capsys, "--strategy", "threshold", "--gamma", "0.5", "--factor", "3")
    assert json.loads(noted.out) | {"seconds": 0} == json.loads(default.out) | {"seconds": 0}
    assert noted.err.splitlines() == ["dultra: note: --factor applies to --strategy planner / planner-sample / factor; ignored",
                                      "dultra: note: --gamma applies to --strategy entropy; ignored"]
    _, own = _generate(capsys, "--strategy", "threshold", "--threshold", "0.0")
    assert json.loads(own.out)["strategy"] == "threshold:tau=0.0" and not own.err


def test_planner_sample_takes_the_factor(capsys):
    _, plain = _generate(capsys, "--strategy", "planner-sample")
    _, scaled = _generate(capsys, "--strategy", "planner-sample", "--factor", "1000")
    assert json.loads(plain.out)["strategy"] == "planner-sample:factor=1.0" and json.loads(plain.out)["nfe"] > 4
    assert json.loads(scaled.out)["strategy"] == "planner-sample:factor=1000.0"
    assert json.loads(scaled.out)["nfe"] == 4  # min(1, 1000 p) = 1: each block of 8 in one step


def test_chat_template_changes_the_prompt(capsys):
    _, with_template = _generate(capsys, "--strategy", "threshold")
    _, raw = _generate(capsys, "--strategy", "threshold", "--no-chat-template")
    assert json.loads(with_template.out)["token_ids"] != json.loads(raw.out)["token_ids"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gen-length", "30", "--block-length", "8"], "e.g. gen_length 32 or block_length 6"),
        (["--gen-length", "16", "--block-length", "32"], "block_length (32) exceeds gen_length (16)"),
        (["--gen-length", "2048", "--block-length", "8"], "exceeds the model's context"),
        (["--model", "/nonexistent/ckpt"], "no checkpoint directory"),
        (["--strategy", "low-confidence", "--steps", "5"], "low-confidence steps"),
        (["--strategy", "low-confidence", "--steps", "0"], "low-confidence steps"),  # not the default
        (["--gen-length", "0"], "gen_length must be > 0, got 0"),  # not block_length, which was not given
    ],
)
def test_user_mistakes_end_with_one_line(capsys, args, message):
    code = main(["generate", "--prompt", "hi", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dultra: error:") and message in err and "Traceback" not in err


def test_unknown_strategy_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "hi", "--strategy", "greedy"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_malformed_pair_flag_says_what_it_expects(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--optim.betas", "a,b"])
    assert exit_info.value.code == 2
    assert "argument --optim.betas: expected numbers separated by commas, such as 0.9,0.99; got 'a,b'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--config", "{tmp}", "--strategies", "threshold:tau=0.9"], "config file {tmp} is a directory"),
    (["eval", "--model", "tiny", "--task", "synthetic-math", "--limit", "2", "--gen-length", "16", "--block-length",
      "16", "--strategies", "threshold:tau=0.9,threshold:tau=0.90", "--output-dir", "{tmp}/ev"],
     "strategies given twice: threshold:tau=0.9 (the same settings, maybe written differently)"),
    (["eval", "--model", "tiny", "--task", "synthetic-math", "--limit", "2", "--examples", "{tmp}/test.parquet",
      "--gen-length", "16", "--block-length", "16", "--output-dir", "{tmp}/ev"],
     "{tmp}/test.parquet is not text: expected a JSONL file of examples"),
    (["train", "--model", "tiny", "--rewards.math.steps", "-1", "--output-dir", "{tmp}/t"],
     "rewards.math.steps must be a number >= 0 (0 turns it off), got -1.0"),
    (["schedule", "list", "--host", "http://127.0.0.1:9", "--timeout", "nan"],
     "--timeout nan: must be a positive number of seconds"),
])
def test_more_user_mistakes_are_one_line_errors(capsys, tmp_path, argv, message):
    (tmp_path / "test.parquet").write_bytes(b"PAR1\x88\x00\xff")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dultra: error: ") and err.count("\n") == 1 and message.format(tmp=tmp_path) in err


@pytest.mark.parametrize("argv, usage, message", [
    (["pretrain", "--group-size", "4"], "usage: dultra pretrain",
     "dultra pretrain: error: unrecognized arguments: --group-size 4 (--group-size is an option of dultra train)"),
    (["generate", "--prompt", "hi", "--bogus"], "usage: dultra generate",
     "dultra generate: error: unrecognized arguments: --bogus\n"),
    (["schedule", "list", "--cron=x"], "usage: dultra schedule list",
     "dultra schedule list: error: unrecognized arguments: --cron=x (--cron is an option of dultra schedule create)"),
])
def test_an_option_of_another_command_is_named_by_the_command_it_was_given_to(capsys, argv, usage, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(usage) and message in err


@pytest.mark.parametrize("device, message", [("bogus", "is not a torch device"), ("cuda:99", "CUDA GPU")])
def test_a_device_this_machine_lacks_is_refused_by_the_parser(capsys, device, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "hi", "--device", device])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --device" in err and message in err


def test_console_entry_point_runs_in_a_fresh_process(tmp_path):
    env = dict(os.environ, DULTRA_CACHE=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "dultra.cli", "generate", "--prompt", "hi", "--gen-length", "16",
         "--block-length", "8", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nfe"] >= 1


def test_an_output_path_under_a_file_ends_with_one_line(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    code = main(["eval", "--model", "tiny", "--task", "synthetic-math", "--limit", "2", "--gen-length", "16",
                 "--block-length", "16", "--strategies", "threshold:tau=0.9", "--output-dir", str(tmp_path / "afile/x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"dultra: error: Not a directory: {tmp_path / 'afile/x'}"


def test_a_checkpoint_trained_by_dultra_decodes_at_its_lengths_and_an_untrained_head_is_named(capsys, tmp_path):
    trained = tmp_path / "grpo"
    shutil.copytree(resolve("tiny"), trained)
    (trained / TRAINING_RECORD).write_text(json.dumps({"stage": "grpo", "steps": 2,
                                                       "config": {"gen_length": 16, "block_length": 8}}))
    assert main(["generate", "--model", str(trained), "--prompt", "hi", "--json"]) == 0
    out = capsys.readouterr()
    assert (json.loads(out.out)["gen_length"], json.loads(out.out)["block_length"]) == (16, 8)
    assert f"gen_length 16 and block_length 8 as {trained} was trained" in out.err and "warning" not in out.err
    assert main(["generate", "--model", str(trained), "--prompt", "hi", "--json", "--gen-length", "32"]) == 0
    out = capsys.readouterr()  # one length given: the other as trained, since the planner saw only it
    assert json.loads(out.out)["block_length"] == 8 and f"dultra: block_length 8 as {trained} was trained" in out.err
    assert main(["generate", "--model", str(trained), "--prompt", "hi", "--json", "--block-length", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["gen_length"] == 16
    (trained / TRAINING_RECORD).write_text(json.dumps({"stage": "pretrain", "steps": 2, "config": {"gen_length": 16}}))
    assert main(["generate", "--model", str(trained), "--prompt", "hi", "--json"]) == 0
    out = capsys.readouterr()
    assert (json.loads(out.out)["gen_length"], json.loads(out.out)["block_length"]) == (16, 16)  # pretrained: one block
    assert f"warning: the planner head of {trained} is untrained" in out.err
    for broken in (json.dumps({"stage": "grpo", "config": None}), "{"):  # unreadable: no record, and a note
        (trained / TRAINING_RECORD).write_text(broken)
        assert main(["generate", "--model", str(trained), "--prompt", "hi", "--json"]) == 0
        out = capsys.readouterr()
        assert (json.loads(out.out)["gen_length"], json.loads(out.out)["block_length"]) == (256, 32)
        assert f"{trained / TRAINING_RECORD} is unreadable or holds no lengths: gen_length 256 and block_length " \
               "32, the defaults" in out.err


def test_compare_checks_its_settings_before_printing_anything(capsys):
    assert main(["compare", "--gen-length", "20"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "gen_length (20) is not a multiple of block_length (16)" in out.err


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "hi", "--factor", "-1"], "factor"),
    (["generate", "--prompt", "hi", "--strategy", "threshold", "--threshold", "2"], "tau"),
    (["generate", "--prompt", "hi", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["generate", "--prompt", "hi", "--gen-length", "0"], "gen_length must be > 0, got 0"),
    (["compare", "--gen-length", "17", "--block-length", "8"], "gen_length (17) is not a multiple of block_length (8)"),
    (["eval", "--cache", "foo"], "unknown cache 'foo'"),
    (["eval", "--task", "gsm9k"], "unknown task 'gsm9k'"),
    (["eval", "--gen-length", "17", "--block-length", "8"], "gen_length (17) is not a multiple of block_length (8)"),
    (["eval", "--data", "/no/such/data", "--limit", "1"], "/no/such/data"),
    (["eval", "--gen-length", "64", "--block-length", "32", "--strategies", "low-confidence:steps=999"], "steps"),
])
def test_settings_mistakes_are_told_before_a_hub_checkpoint_is_looked_up(capsys, monkeypatch, argv, message):
    import dultra.model.hub

    monkeypatch.setattr(dultra.model.hub, "_snapshot", lambda *a: pytest.fail("looked the checkpoint up"))
    assert main([*argv, "--model", "someone/some-model"]) == 2
    assert message in capsys.readouterr().err


def test_compare_warns_of_an_untrained_planner(capsys, tmp_path):
    pretrained = tmp_path / "pretrain"
    shutil.copytree(resolve("tiny"), pretrained)
    (pretrained / TRAINING_RECORD).write_text(json.dumps({"stage": "pretrain", "steps": 2,
                                                          "config": {"gen_length": 16}}))
    assert main(["compare", "--model", str(pretrained), "--device", "cpu"]) == 0
    assert f"warning: the planner head of {pretrained} is untrained" in capsys.readouterr().err


def test_compare_checks_the_prompt_and_tokenizer_before_loading_the_weights(capsys, tmp_path, monkeypatch):
    import dultra.model.loading

    model = tmp_path / "model"
    shutil.copytree(resolve("tiny"), model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"max_sequence_length": 8}))
    monkeypatch.setattr(dultra.model.loading, "load_model", lambda *a, **k: pytest.fail("loaded the weights"))
    assert main(["compare", "--model", str(model)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "prompt (26 tokens) + gen_length (64) exceeds the model's context (8)" in out.err
    (model / "config.json").write_text(json.dumps(config))
    (model / "tokenizer.json").unlink()
    (model / "tokenizer_config.json").unlink()
    assert main(["compare", "--model", str(model)]) == 2
    assert "has no tokenizer files" in capsys.readouterr().err


def test_compare_decodes_a_trained_checkpoint_at_its_lengths(capsys, tmp_path):
    trained = tmp_path / "grpo"
    shutil.copytree(resolve("tiny"), trained)
    (trained / TRAINING_RECORD).write_text(json.dumps({"stage": "grpo", "steps": 2,
                                                       "config": {"gen_length": 16, "block_length": 8}}))
    assert main(["compare", "--model", str(trained), "--device", "cpu", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "cpu), prompt 'Compute ||||5 - 3| - 9| - 4| - 7|.', gen 16, block 8 " \
           f"(gen_length 16 and block_length 8 as {trained} was trained)" in out
    assert "low-confidence:steps=16" in out and len(out.splitlines()) == 3 + 8  # header, blank, titles, 8 rows


def test_compare_stops_where_generate_and_eval_stop(tmp_path, monkeypatch):
    import dultra.decoding

    model = tmp_path / "model"
    shutil.copytree(resolve("tiny"), model)
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 7]}))
    stops, real = [], dultra.decoding.generate
    monkeypatch.setattr(dultra.decoding, "generate", lambda *a: stops.append(a[-1].eos_ids) or real(*a))
    assert main(["compare", "--model", str(model), "--gen-length", "16", "--block-length", "8"]) == 0
    assert len(stops) == 8 and all(set(s) >= {eos, 7} for s in stops)


def test_a_base_model_without_a_planner_head_is_compared_on_the_other_strategies(capsys, tmp_path, tiny_tokenizer):
    base = save_small_checkpoint(tmp_path / "base", tiny_tokenizer, num_head_layers=0)  # as LLaDA-8B-Instruct
    assert main(["compare", "--model", str(base), "--gen-length", "16", "--block-length", "8"]) == 0
    out = capsys.readouterr()
    assert f"{base} has no planner head: its strategies are left out" in out.err
    rows = [line.split()[0] for line in out.out.splitlines()[3:]]
    assert rows == ["threshold:tau=0.9", "threshold:tau=0.5", "factor:factor=1.0", "low-confidence:steps=16",
                    "entropy:gamma=0.1"]
    code = main(["eval", "--model", str(base), "--task", "synthetic-math", "--limit", "2", "--gen-length", "16",
                 "--block-length", "8", "--output-dir", str(tmp_path / "eval")])  # default strategies: planner too
    err = capsys.readouterr().err
    assert code == 2 and "has no planner head, so it cannot decode planner:factor=" in err
    assert "pass --strategies without planner strategies" in err


def test_a_file_as_a_training_output_dir_is_named(capsys, tmp_path):
    (tmp_path / "typo.yaml").write_text("x")
    assert main(["pretrain", "--output-dir", str(tmp_path / "typo.yaml"), "--steps", "1"]) == 2
    assert f"output_dir {tmp_path / 'typo.yaml'} is a file, not a directory" in capsys.readouterr().err


def test_sigterm_stops_a_command_like_ctrl_c_with_its_clean_up(tmp_path):
    """`kill` and Kubernetes stop with SIGTERM: one line and exit 143, not a silent death."""
    import signal
    import socket

    with socket.socket() as silent:  # an endpoint that accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
        proc = subprocess.Popen([sys.executable, "-m", "dultra.cli", "pull", "s3://bucket/m", str(tmp_path / "out"),
                                 "--endpoint-url", f"http://127.0.0.1:{silent.getsockname()[1]}"],
                                stderr=subprocess.PIPE, text=True, env=env)
        silent.settimeout(120)
        connection, _ = silent.accept()  # the pull is now waiting for an answer
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        connection.close()
    assert proc.returncode == 143 and err.strip().endswith("dultra: terminated"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-made left behind


def test_ctrl_c_while_the_command_starts_is_one_line():
    """Importing torch and transformers takes seconds: Ctrl-C then is as clean as later."""
    proc = subprocess.Popen([sys.executable, "-m", "dultra.cli", "generate", "--model", "tiny", "--prompt", "hi"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text():  # torch is being imported
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (130, "dultra: interrupted\n")


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """`dultra runs ... | head`: the pipe closes before the output is written; no traceback."""
    program = tmp_path / "hello.py"
    program.write_text("print('hello')\n")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "dultra.cli", "sandbox", "run", str(program)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(monkeypatch):
    def run(args):
        raise BrokenPipeError(32, "Broken pipe")  # a worker's pipe, say

    monkeypatch.setattr(generate_command, "run", run)
    with pytest.raises(BrokenPipeError):
        main(["generate", "--prompt", "hi"])


def test_commands_without_a_model_start_without_torch():
    """Nor do any command's --help and its option mistakes: the settings classes import no torch."""
    code = ("import sys\nfrom dultra.cli import COMMANDS, main\n"
            "for argv in (['schedule', 'list', '--host', 'http://127.0.0.1:9', '--timeout', '1'],\n"
            "             ['runs', 's3://bucket/p', '--endpoint-url', 'http://127.0.0.1:9'],\n"
            "             ['pretrain', '--optim.lr', '-1'], ['eval', '--config', 'no-such.yaml']):\n"
            "    assert main(argv) == 2\n"
            "for argv, status in (([], 2), (['bogus'], 2), (['generate', '--strategy', 'bogus'], 2),\n"
            "                     *(([*name.split(), '--help'], 0) for name in [*COMMANDS, 'schedule create']),\n"
            "                     (['--help'], 0)):  # the listing last, for the check below\n"
            "    try:\n        main(argv)\n    except SystemExit as stop:\n"
            "        assert stop.code == status, argv\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                              "AWS_MAX_ATTEMPTS": "1"})
    assert out.stdout.endswith("  schedule  scheduled retraining: Kubeflow Pipelines recurring runs\n"
                               "\noptions:\n  -h, --help  show this help message and exit\n[]\n"), out.stderr


def test_the_choices_written_out_for_the_parser_are_the_decoders():
    assert generate_command.STRATEGY_NAMES == tuple(STRATEGIES)
    assert generate_command.CACHE_KINDS == CACHES


def test_the_command_listing_names_every_command_its_modules_register(capsys):
    """`dultra --help` lists the commands without importing their modules: the listing and the
    modules must name the same commands."""
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert all(f"    {name}  " in listing or f"    {name}\n" in listing for name in COMMANDS)
    registered = build_parser(every=True)._subparsers._group_actions[0].choices
    assert list(registered) == list(COMMANDS)
    for name, (module, _) in COMMANDS.items():  # each command's own parser comes from its module
        assert name in build_parser(name)._subparsers._group_actions[0].choices, module
