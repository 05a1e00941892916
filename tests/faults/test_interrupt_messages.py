"""Ctrl-C or SIGTERM on train and eval says what was kept and the exact command that continues (reliability v2, finding 9)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT handled as in a terminal, even when pytest runs in the background (`cmd &` starts
    its children with SIGINT ignored, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(cmd: list[str], ready: Callable[[], bool], sig: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal
    )
    deadline = time.time() + 300
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopped_training_names_its_checkpoint_and_the_resume_command(tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run),
           "--steps", "1000", "--set", "trainer.save_every=1", "--set", "trainer.eval_every=0"]  # fmt: skip
    out = _interrupt_when(cmd, lambda: (run / "checkpoints" / "step-1").is_dir(), sig)
    said = " ".join(out.stderr.split())
    assert out.returncode == 130, out.stderr[-2000:]
    assert "its last checkpoint is" in said and f"searchplay train --resume {shlex.quote(str(run))}" in said
    resumed = subprocess.run([sys.executable, "-m", "searchplay", "train", "--resume", str(run), "--steps", "2"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_stopped_evaluation_counts_its_predictions_and_gives_the_command(tmp_path: Path) -> None:
    out_dir = tmp_path / "eval"
    args = ["eval", "--model", "tiny-random", "--data", "nq-answerable", "--limit", "400", "--batch-size", "2",
            "--out", str(out_dir), "--set", "model.dtype=float32"]  # fmt: skip
    predictions = out_dir / "predictions-nq-answerable.jsonl"
    started = lambda: predictions.is_file() and predictions.stat().st_size > 0  # noqa: E731
    out = _interrupt_when([sys.executable, "-m", "searchplay", *args], started, signal.SIGINT)
    said = " ".join(out.stderr.split())
    assert out.returncode == 130, out.stderr[-2000:]
    assert "stopped: predictions kept in" in said and "nq-answerable:" in said
    assert f"continue with: searchplay {shlex.join([*args, '--resume'])}" in said


def test_sigterm_while_train_loads_its_libraries_says_so_and_makes_no_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run)]
    began = time.time()
    out = _interrupt_when(cmd, lambda: time.time() - began > 1.0, signal.SIGTERM)  # inside torch's import
    assert out.returncode == 143 and "stopped by SIGTERM" in out.stderr, out.stderr[-2000:]  # it used to exit silently
    assert "Traceback" not in out.stderr and not run.exists()
