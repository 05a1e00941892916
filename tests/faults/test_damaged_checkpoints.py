"""Resume trusts nothing it can check (reliability v3, findings 6 and 11): a checkpoint's files are checked
against the checksums written when it was saved, its state.json field by field, and the pool log against the
events the checkpoint counted, all before any model loads; each refusal names the file and the way on, and
changes nothing. A save that fails for want of space (here a file-size limit, which fails a write the way a
full disk does) removes its partial `step-N.tmp` and says so instead of a raw safetensors traceback.
Real `searchplay train` processes on the tiny test config.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.folders import fingerprint, said

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--config", "configs/tiny-test.toml", "--set", "trainer.save_every=1", "--set", "trainer.eval_every=0"]


def train(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def small_files() -> None:  # writes past the limit fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "searchplay", "train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=small_files if limit_bytes else None,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    out = train(*ARGS, "--run-dir", str(run))
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def refused(run: Path, *names: str) -> str:
    """Resume `run`: refused before loading, naming every one of `names`, and nothing in the folder changed."""
    before = fingerprint(run)
    out = train("--resume", str(run), "--steps", "3")
    text = said(out)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "loading the policy" not in text, text
    for name in names:
        assert name in text, (name, text)
    assert fingerprint(run) == before
    return text


def test_damaged_weights_are_refused_and_the_earlier_checkpoint_resumes(run: Path) -> None:
    weights = run / "checkpoints" / "step-2" / "model" / "model.safetensors"
    with weights.open("r+b") as f:  # zeroed bytes inside the tensors: the file still loads, with wrong weights
        f.seek(weights.stat().st_size // 2)
        f.write(bytes(4096))
    text = refused(run, "model.safetensors", "damaged", "step-2")
    assert "to resume from the checkpoint before it" in text
    shutil.move(run / "checkpoints" / "step-2", run.parent / "step-2-damaged")  # the way on the message gives
    out = train("--resume", str(run), "--steps", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # step 2 played again from step 1's checkpoint


def test_a_truncated_optimizer_state_is_refused(run: Path) -> None:
    state = run / "checkpoints" / "step-2" / "trainer.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    refused(run, "trainer.pt", "damaged")


def test_state_json_is_checked_field_by_field_even_without_checksums(run: Path) -> None:
    checkpoint = run / "checkpoints" / "step-2"
    (checkpoint / "checksums.json").unlink()  # as a checkpoint saved before checksums existed
    state = json.loads((checkpoint / "state.json").read_text())
    del state["pool_events"]
    (checkpoint / "state.json").write_text(json.dumps(state))
    refused(run, "state.json", "'pool_events'")
    (checkpoint / "state.json").write_text('{"step": 2, "pool')
    refused(run, "state.json", "cannot be read")


def test_a_pool_log_shorter_than_the_checkpoint_counted_is_refused(run: Path) -> None:
    pool = run / "pool.jsonl"
    lines = pool.read_bytes().splitlines(keepends=True)
    pool.write_bytes(b"".join(lines[:-2]))
    refused(run, "pool.jsonl", f"holds {len(lines) - 2} complete events", "counted")


def test_a_save_that_runs_out_of_space_removes_its_partial_checkpoint_and_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = train(*ARGS, "--run-dir", str(run), limit_bytes=5_000_000)  # the tiny model's weights are 12.9 MB
    text = said(out)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "could not save the checkpoint of step 1" in text and "GiB free" in text and "--resume" in text, text
    assert list((run / "checkpoints").iterdir()) == []  # no step-1.tmp left behind
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
