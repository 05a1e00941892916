"""Typos and out-of-range values on the command line fail at once, naming the option and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "option", "allowed"),
    [
        (["index", "build", "--corpus", "bundled", "--out", "x", "--kind", "hybird"], "--kind", "'bm25', 'dense'"),
        (["search", "Paris", "--kind", "bm52"], "--kind", "'bm25', 'dense', 'hybrid'"),
        (["eval", "--retriever", "bm52"], "--retriever", "bm25, dense, hybrid, none nor an http(s):// URL"),
        (["ask", "Who?", "--scaffold", "guidd"], "--scaffold", "'guided', 'free'"),
        (["search", "Paris", "-k", "0"], "-k", "greater than or equal to 1"),
        (["serve-model", "--port", "70000"], "--port", "less than or equal to 65535"),
        (["eval", "--limit", "0"], "--limit", "greater than or equal to 1"),
        (["train", "--steps", "-5"], "--steps", "greater than or equal to 1"),
    ],
)
def test_bad_option_values_are_refused_before_any_work(tmp_path: Path, args: list[str], option: str, allowed: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "searchplay", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    said = " ".join(out.stderr.replace("│", " ").split())
    assert out.returncode == 2 and f"Invalid value for '{option}'" in said and allowed in said, out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created
