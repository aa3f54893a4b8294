"""`dultra sandbox run` end to end (in-process workers) and its one-line errors."""

from __future__ import annotations

import json

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


def test_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["sandbox", "run", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dultra: error: cannot read program") and err.count("\n") == 1


def test_a_binary_program_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "prog.pyc").write_bytes(b"\x88\x00\xff compiled")
    assert main(["sandbox", "run", str(tmp_path / "prog.pyc")]) == 2
    assert f"dultra: error: program {tmp_path / 'prog.pyc'} is not UTF-8 text" in capsys.readouterr().err


def test_bad_timeout_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "sol.py").write_text("x = 1\n")
    assert main(["sandbox", "run", str(tmp_path / "sol.py"), "--timeout", "1e9"]) == 2
    assert "timeout_s must be between" in capsys.readouterr().err


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
