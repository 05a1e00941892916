"""Progress in a log file (not a terminal): plain lines, so a background job's log shows how far it got."""

from __future__ import annotations

import pytest
from rich.console import Console

from searchplay.progress import _log_lines, progress


def test_progress_into_a_log_file_prints_the_count_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(True, "accepted questions", total=5) as advance:
        advance(2)
        advance(3)
    assert "accepted questions: 5/5 after" in capsys.readouterr().err


def test_progress_lines_come_while_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _log_lines(Console(stderr=True), "eval", None, every_s=0.0)
    advance = next(lines)
    advance(1)
    advance(1)
    assert capsys.readouterr().err.splitlines()[-1].startswith("eval: 2 after")
