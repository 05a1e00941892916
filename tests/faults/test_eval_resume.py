"""eval --resume keeps good work: only a torn last line is cut; a damaged line elsewhere stops with file and line.

Reliability v2, finding 3: one damaged line in the middle silently cut the file there, and the good
predictions after it were deleted and computed again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def evaluate(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["eval", "--model", "tiny-random", "--data", "nq-answerable", "--limit", "6", "--batch-size", "2",
            "--out", str(out), "--set", "model.dtype=float32", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "searchplay", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_damaged_line_stops_resume_and_a_torn_last_line_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert evaluate(out).returncode == 0
    predictions = out / "predictions-nq-answerable.jsonl"
    lines = predictions.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    for name in ("summary.json", "summary.md"):  # as if it had been killed before finishing
        (out / name).unlink()
    damaged = b"".join([*lines[:2], b'{"id": "oops", \n', *lines[3:]])
    predictions.write_bytes(damaged)
    stopped = evaluate(out, "--resume")
    said = " ".join(stopped.stderr.split())
    assert stopped.returncode != 0 and "predictions-nq-answerable.jsonl, line 3: damaged" in said
    assert "3 predictions follow" in said
    assert predictions.read_bytes() == damaged  # nothing was deleted
    predictions.write_bytes(b"".join(lines[:5]) + lines[5][:20])  # killed while writing the last line
    resumed = evaluate(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = predictions.read_bytes().splitlines(keepends=True)
    assert len(again) == 6 and again[:5] == lines[:5]  # the five good lines kept, the torn one played again


def test_a_last_record_without_only_its_newline_is_completed_not_merged(tmp_path: Path) -> None:
    """Reliability v3, finding 7: resume appended the next record onto a last line that lacked only its newline."""
    out = tmp_path / "eval"
    assert evaluate(out).returncode == 0
    predictions = out / "predictions-nq-answerable.jsonl"
    lines = predictions.read_bytes().splitlines(keepends=True)
    for name in ("summary.json", "summary.md"):
        (out / name).unlink()
    predictions.write_bytes(b"".join(lines[:3]) + lines[3].rstrip(b"\n"))  # four whole records, the newline lost
    resumed = evaluate(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = predictions.read_bytes().splitlines(keepends=True)
    assert len(again) == 6 and again[:4] == lines[:4]  # the fourth kept whole, two more after it, one per line
    assert (out / "summary.json").is_file()
