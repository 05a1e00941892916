"""Commands that write one file refuse to replace what they did not write, and never write over a run's records.

Reliability v2, finding 1: `report RUN --out RUN/metrics.jsonl` replaced the run's metrics with HTML.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def searchplay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "searchplay", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("out") / "run"
    out = searchplay("train", "-c", "configs/tiny-test.toml", "--run-dir", str(run), "--steps", "1",
                     "--set", "trainer.eval_every=0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return run


@pytest.mark.parametrize("record", ["metrics.jsonl", "config.toml", "pool.jsonl", "trajectories/step-000001.jsonl", "new.json"])
@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_runs_records_are_never_written_over(run: Path, record: str, command: str) -> None:
    target = run / record
    before = target.read_bytes() if target.exists() else None
    out = searchplay(command, str(run), "--out", str(target), "--overwrite")  # not even with --overwrite
    assert out.returncode == 2 and "would write over the records of" in out.stderr
    assert (target.read_bytes() if target.exists() else None) == before


def test_a_file_we_did_not_write_needs_overwrite(run: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.html"
    notes.write_text("my notes")
    out = searchplay("report", str(run), "--out", str(notes))
    assert out.returncode == 2 and "not a report written by searchplay" in out.stderr and notes.read_text() == "my notes"
    assert searchplay("report", str(run), "--out", str(notes), "--overwrite").returncode == 0
    assert "searchplay report" in notes.read_text()[:4096]
    assert searchplay("report", str(run), "--out", str(notes)).returncode == 0  # ours now: replaced without asking
    picture = tmp_path / "holiday.png"
    picture.write_bytes(b"\\x89PNG not ours")
    out = searchplay("plot", str(run), "--out", str(picture))
    assert out.returncode == 2 and picture.read_bytes() == b"\\x89PNG not ours"
    assert searchplay("plot", str(run)).returncode == 0 and searchplay("plot", str(run)).returncode == 0  # curves.png is ours


def test_links_checkpoint_files_and_evaluation_records_are_refused_too(run: Path, tmp_path: Path) -> None:
    """Reliability v3, finding 3: each of these was written over with --overwrite."""
    link = tmp_path / "curves.png"
    link.symlink_to(run / "metrics.jsonl")  # the link's own suffix is .png; writing follows it to the metrics
    template = run / "checkpoints" / "step-1" / "model" / "chat_template.jinja"  # four levels below the run
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "summary.json").write_text("{}")
    (evaluation / "summary.md").write_text("# the evaluation's own summary")
    for command, target in (("plot", link), ("report", template), ("report", evaluation / "summary.md")):
        real = target.resolve()
        before = real.read_bytes() if real.exists() else None
        out = searchplay(command, str(run), "--out", str(target), "--overwrite")
        assert out.returncode == 2 and "would write over the records of" in out.stderr, (target, out.stderr[-800:])
        assert (real.read_bytes() if real.exists() else None) == before
