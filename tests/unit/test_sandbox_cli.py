"""`dultra sandbox run` end to end (in-process workers), and its one-line errors and those of
`python -m sandbox run`, which reads and checks its input alike."""

from __future__ import annotations

import json

import pytest

from dultra.cli import main


def test_run_prints_the_result(tmp_path, capsys):
    (tmp_path / "sol.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests.py").write_text("assert add(1, 2) == 3\n")
    assert main(["sandbox", "run", str(tmp_path / "sol.py"), "--tests", str(tmp_path / "tests.py")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["passed"], result["total"]) == ("passed", 1, 1)


def test_run_reports_a_failure_with_exit_1(tmp_path, capsys):
    (tmp_path / "sol.py").write_text("def add(a, b):\n    return a - b\n")
    (tmp_path / "tests.py").write_text("assert add(1, 2) == 3\n")
    assert main(["sandbox", "run", str(tmp_path / "sol.py"), "--tests", str(tmp_path / "tests.py")]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "failed"


def test_run_with_stdin_and_expected_stdout(tmp_path, capsys):
    (tmp_path / "echo.py").write_text("print(int(input()) * 2)\n")
    (tmp_path / "in.txt").write_text("21\n")
    (tmp_path / "out.txt").write_text("42\n")
    code = main(["sandbox", "run", str(tmp_path / "echo.py"), "--stdin", str(tmp_path / "in.txt"),
                 "--expected-stdout", str(tmp_path / "out.txt")])
    assert code == 0, capsys.readouterr()


def test_up_with_an_unknown_image_is_one_line_and_exit_2(capsys):
    # Without an engine the message says so; with one, that the image is missing.
    assert main(["sandbox", "up", "--image", "dultra-sandbox:no-such-tag", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dultra: error: ") and err.count("\n") == 1


def test_serve_with_bad_settings_is_one_line_and_exit_2(capsys):
    assert main(["sandbox", "serve", "--workers", "-1"]) == 2
    assert "workers must be positive" in capsys.readouterr().err


def test_serve_on_a_busy_port_is_one_line_and_exit_2(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["sandbox", "serve", "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def _dultra(args):
    return main(["sandbox", "run", *args]), "dultra: error: "


def _standalone(args):
    from sandbox.__main__ import main as sandbox_main

    return sandbox_main(["run", *args]), "sandbox: error: "


ENTRY_POINTS = pytest.mark.parametrize("run", [_dultra, _standalone], ids=["dultra", "python-m-sandbox"])


def _one_line_error(run, args, capsys) -> str:
    code, prefix = run(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(prefix) and err.count("\n") == 1, err
    return err


@ENTRY_POINTS
@pytest.mark.parametrize("name, make, message", [
    ("nope.py", lambda p: None, "cannot read program {p}: No such file or directory"),
    ("folder", lambda p: p.mkdir(), "cannot read program {p}: Is a directory"),
    ("prog.pyc", lambda p: p.write_bytes(b"\x88\x00\xff compiled"), "program {p} is not UTF-8 text"),
])
def test_an_unreadable_program_is_one_line_and_exit_2(run, name, make, message, tmp_path, capsys):
    make(tmp_path / name)
    assert message.format(p=tmp_path / name) in _one_line_error(run, [str(tmp_path / name)], capsys)


@ENTRY_POINTS
def test_unreadable_tests_are_one_line_and_exit_2(run, tmp_path, capsys):
    (tmp_path / "sol.py").write_text("x = 1\n")
    err = _one_line_error(run, [str(tmp_path / "sol.py"), "--tests", str(tmp_path)], capsys)
    assert f"cannot read tests {tmp_path}: Is a directory" in err


@ENTRY_POINTS
@pytest.mark.parametrize("timeout", ["0", "-1", "1e9", "nan", "inf"])
def test_a_timeout_outside_the_limits_is_one_line_naming_them(run, timeout, tmp_path, capsys):
    (tmp_path / "sol.py").write_text("x = 1\n")
    err = _one_line_error(run, [str(tmp_path / "sol.py"), "--timeout", timeout], capsys)
    assert "timeout_s must be between 0.001 and 60.0" in err


@ENTRY_POINTS
def test_a_bad_sandbox_variable_is_one_line_naming_it(run, tmp_path, capsys, monkeypatch):
    (tmp_path / "sol.py").write_text("x = 1\n")
    monkeypatch.setenv("SANDBOX_PORT", "abc")
    assert "SANDBOX_PORT='abc' is not an integer" in _one_line_error(run, [str(tmp_path / "sol.py")], capsys)


@pytest.mark.parametrize("url", ["http://localhost:80a", "http://[::1"])
def test_a_malformed_sandbox_url_is_one_line_and_exit_2(url, tmp_path, capsys):
    (tmp_path / "sol.py").write_text("x = 1\n")
    err = _one_line_error(_dultra, [str(tmp_path / "sol.py"), "--sandbox-url", url], capsys)
    assert f"sandbox URL '{url}' is not usable" in err
