"""Progress off a terminal: plain lines, at most one per interval, and the last one."""

from __future__ import annotations

from dultra.progress import LogProgress, progress


def test_off_a_terminal_progress_prints_plain_lines(capsys):
    bar = progress(range(2, 4), desc="grpo", total=4, initial=2, unit="step")  # pytest's stderr is no terminal
    assert isinstance(bar, LogProgress)
    for step in bar:
        bar.set_postfix(reward=f"{step / 10:.2f}")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("grpo: 4/4 (100%), ") and err.splitlines()[-1].endswith(
        "s/step, reward=0.30")
    assert len(err.splitlines()) == 1  # 30 s between lines: only the last one here


def test_lines_come_once_per_interval_and_close_says_where_it_stopped(capsys):
    with LogProgress(None, desc="eval", total=10, unit="sample", interval_s=0.0) as bar:
        bar.set_postfix_str("threshold:tau=0.9")
        bar.update(4)
        bar.update(2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["eval: 4/10 (40%)", "eval: 6/10 (60%)", "eval: 6/10 (60%)"]
    assert lines[0].endswith("threshold:tau=0.9")


def test_other_ranks_print_nothing(capsys):
    for _ in progress(range(3), desc="grpo", total=3, enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_transfers_print_byte_lines_off_a_terminal_and_nothing_when_disabled(capsys):
    from dultra.storage.progress import ByteProgress, GiB

    with ByteProgress(2 * GiB, "pull run-1", interval_s=0.0) as progress:  # pytest's stderr is no terminal
        progress(GiB // 2)
        progress(GiB // 2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("pull run-1: 0.50 of 2.00 GiB (25%), ") and lines[0].endswith(" MiB/s")
    assert lines[-1].startswith("pull run-1: 1.00 of 2.00 GiB (50%)") and len(lines) == 3  # and the last, on close
    with ByteProgress(GiB, "pull run-2", enabled=False, interval_s=0.0) as progress:
        progress(GiB)
    assert capsys.readouterr().err == ""
