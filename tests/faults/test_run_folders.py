"""Run folders are written by one kind of writer and resumed only from a whole config (reliability v3, findings 1-3).

A `config.toml` cut short (a crash or full disk while it was written) is valid TOML and used to resume on defaults
for everything it lost; it is refused now, naming the file and the fix. `play --run-dir` holds the writer lock,
never plays into a training run nor over another config, and never rewrites the config it found. A run folder is
never an evaluation folder, nor the reverse. Real `searchplay` processes on the tiny test config; each refusal
comes before any model is loaded, and nothing in the folder changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchplay.config import CONFIG_END, ConfigError, load_config, load_run_config, to_toml
from searchplay.outdir import EVAL_FILES, RUN_FILES, OutputDirError, check_output_dir, single_writer
from searchplay.train.run_dir import RunDir
from tests.faults.folders import fingerprint, said

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny-test.toml"


def searchplay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "searchplay", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_run_config_is_written_whole_and_ends_with_the_marker(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    run = RunDir(tmp_path / "run").create(cfg, ["model.dtype = float32: a note"])
    text = run.config.read_text()
    assert text.startswith("# resolved on this machine: model.dtype") and text.rstrip().endswith(CONFIG_END)
    assert sorted(p.name for p in run.root.iterdir()) == ["config.toml", "trajectories"]  # no temporary file left
    loaded, absent = load_run_config(run.config)
    assert to_toml(loaded) == to_toml(cfg) and absent == []


@pytest.mark.parametrize("cut", [0, 0.3, 0.9])
def test_a_config_cut_short_is_refused_instead_of_resuming_on_defaults(tmp_path: Path, cut: float) -> None:
    path = tmp_path / "config.toml"
    whole = to_toml(load_config(TINY))
    path.write_text(whole[: int(len(whole) * cut)].rsplit("\n", 1)[0] + "\n" if cut else "")
    with pytest.raises(ConfigError, match=r"config.toml is damaged: it does not end with the line '# end of config'"):
        load_run_config(path)


def test_a_whole_config_from_an_older_version_names_the_fields_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    lines = to_toml(load_config(TINY)).splitlines()
    path.write_text("\n".join(line for line in lines if not line.startswith(("probe_every", "eval_reading"))) + "\n")
    cfg, absent = load_run_config(path)
    assert absent == ["trainer.eval_reading", "trainer.probe_every"] and cfg.trainer.probe_every == 0


def test_train_resume_refuses_a_truncated_config_and_changes_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create(load_config(TINY))
    text = run.config.read_text()
    run.config.write_text(text[: text.index("[learner]")])  # what a crash in a plain write could leave
    before = fingerprint(run.root)
    out = searchplay("train", "--resume", str(run.root))
    assert out.returncode == 2 and f"{run.config} is damaged" in said(out) and "checkpoints/step-N/config.toml" in said(out)
    assert fingerprint(run.root) == before


def test_run_and_evaluation_folders_are_never_taken_for_each_other(tmp_path: Path) -> None:
    for name in RUN_FILES:
        folder = tmp_path / f"run-{name}"
        (folder / name).mkdir(parents=True) if name == "checkpoints" else (folder.mkdir(), (folder / name).write_text("x"))
        with pytest.raises(OutputDirError, match=f"holds {name}: it is another kind of folder, not a evaluation"):
            check_output_dir(folder, ("summary.json",), "evaluation", RUN_FILES)
    for name in EVAL_FILES:
        folder = tmp_path / f"eval-{name}"
        folder.mkdir()
        (folder / name).write_text("{}")
        with pytest.raises(OutputDirError, match=f"holds {name}: it is another kind of folder, not a run"):
            check_output_dir(folder, ("config.toml", "writer.lock"), "run", EVAL_FILES)
    out = searchplay("train", "-c", str(TINY), "--run-dir", str(tmp_path / "eval-summary.json"))
    assert out.returncode == 2 and "another kind of folder" in said(out)


def test_play_never_writes_into_a_training_run_another_config_or_a_locked_folder(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    trained = RunDir(tmp_path / "trained").create(cfg)
    (trained.checkpoints / "step-1").mkdir(parents=True)
    other = RunDir(tmp_path / "other").create(load_config(TINY, ["game.batch_size=5"]))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.toml.bak").write_text("the user's own file")
    busy = RunDir(tmp_path / "busy").create(cfg)
    cases = [
        (trained.root, "holds a training run (checkpoints/)"),
        (other.root, "holds rounds played with another config (game.batch_size: 5 -> 3"),
        (foreign, "holds no run written by searchplay"),
        (busy.root, f"is being written by another searchplay training run (pid {os.getpid()})"),
    ]
    before = {folder: fingerprint(folder) for folder, _ in cases}
    with single_writer(busy.root, "training run"):
        for folder, reason in cases:
            out = searchplay("play", "-c", str(TINY), "--run-dir", str(folder))
            assert out.returncode == 2 and reason in said(out), (folder, out.stderr[-1500:])
    assert {folder: fingerprint(folder) for folder, _ in cases} == before
