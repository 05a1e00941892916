"""Checkpoints: written whole to a temporary directory, then renamed into place.

    checkpoints/step-N/model/        Hugging Face model directory (safetensors; transformers/vLLM load it as is;
                                     a LoRA run's merged weights, its adapters in model/adapter/)
    checkpoints/step-N/trainer.pt    optimizer, scheduler, learner RNG, torch/python RNG states
    checkpoints/step-N/optimizer/    a sharded learner's optimizer state instead, each rank's part written by that rank
                                     (torch.distributed.checkpoint; loads into any number of ranks, or one process)
    checkpoints/step-N/state.json    step, pool events count, seed sampler state, metrics lines
    checkpoints/step-N/config.toml   resolved config
    checkpoints/step-N/checksums.json   size and sha256 of every file above, written last

A crash while saving leaves only `step-N.tmp`, which is never taken for a checkpoint; the files
are fsynced before the rename publishes them, and an existing `step-N` is replaced only once the
new one is in place. The newest `step-N` is "latest". Only the newest `keep` checkpoints are kept.
A save that fails (a full disk) removes its `step-N.tmp` and says where and why. Resuming checks every
file against `checksums.json` and `state.json`'s fields before anything loads: damaged weights or a
damaged optimizer state would otherwise train on silently or fail with a raw traceback.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from searchplay.config import Config, to_toml
from searchplay.digest import first_damaged, folder_checksums
from searchplay.outdir import fsync_tree, replace_dir

_STEP_DIR = re.compile(r"^step-(\d+)$")
ADAPTER_DIR = "adapter"  # a LoRA run's adapters inside a checkpoint's model directory
CHECKSUMS = "checksums.json"
OPTIMIZER_SHARDS = "optimizer"  # a sharded learner's optimizer state, one file per rank (torch.distributed.checkpoint)
STATE_FIELDS = {"step": int, "pool_events": int, "sampler": dict, "game_rng": list}


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written, or one that is damaged; names the file and the way on."""


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    learner_state: dict[str, Any],
    state: dict[str, Any],
    cfg: Config,
    keep: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
    adapters: Any | None = None,
    begun: bool = False,
) -> Path:
    """`weights`: the full state of a sharded model (Learner.full_weights) or a LoRA policy's merged weights;
    None: the model's own. `adapters`: a LoRA policy, whose adapters are kept in model/adapter/ for resuming.
    `begun`: `begin_checkpoint` made the folder and the learner ranks wrote their optimizer shards into it."""
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    try:
        if not begun:
            begin_checkpoint(root, step)
        model.save_pretrained(tmp / "model", state_dict=weights)
        if adapters is not None:
            adapters.save_pretrained(tmp / "model" / ADAPTER_DIR)
        tokenizer.save_pretrained(tmp / "model")
        rng = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
        torch.save({**learner_state, **rng}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
        (tmp / "config.toml").write_text(to_toml(cfg))
        (tmp / CHECKSUMS).write_text(json.dumps(folder_checksums(tmp, (CHECKSUMS,)), indent=1))
        fsync_tree(tmp)
    except Exception as e:  # safetensors, torch and json each report a full disk their own way
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(root).free / 2**30
        raise CheckpointError(
            f"could not save the checkpoint of step {step} in {root} ({type(e).__name__}: {e}; {free:.1f} GiB free "
            "there); nothing of it was kept: free some space and continue with --resume from the last checkpoint"
        ) from e
    replace_dir(tmp, final)  # an older step-N (a replayed step) is removed only after the new one is in place
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def begin_checkpoint(root: Path, step: int) -> Path:
    """The empty `step-N.tmp` a checkpoint is written into (what a failed save of the same step left is removed)."""
    tmp = root / f"step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def verify_checkpoint(path: Path) -> list[str]:
    """Check a checkpoint before resuming from it: its files against checksums.json, state.json's fields. Raises
    CheckpointError naming the damaged file; returns notes (a checkpoint saved before checksums existed)."""
    way_on = f"move {path} out of {path.parent} to resume from the checkpoint before it, or start the run again"
    listed = path / CHECKSUMS
    notes = []
    if not listed.is_file():
        notes.append(f"{path.name} has no {CHECKSUMS} (saved by an older searchplay): its files are not checked")
    else:
        try:
            expected = json.loads(listed.read_text())
            assert isinstance(expected, dict)
        except (ValueError, AssertionError, UnicodeDecodeError):
            raise CheckpointError(f"{listed} is damaged (not a JSON object); {way_on}") from None
        damaged = first_damaged(path, expected)
        if damaged is not None:
            raise CheckpointError(f"{path / damaged[0]} is damaged ({damaged[1]}); {way_on}")
    read_state(path)
    return notes


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_trainer_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(learner state incl. RNGs, state.json) of a checkpoint; restores the global RNGs."""
    try:  # the optimizer moves its state to the parameters' device
        blob = torch.load(path / "trainer.pt", weights_only=False, map_location="cpu")
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # what a truncated or damaged file raises
        raise CheckpointError(
            f"{path / 'trainer.pt'} cannot be read ({e}); move {path} aside to resume from an earlier one"
        ) from None
    torch.set_rng_state(blob.pop("torch_rng"))
    random.setstate(blob.pop("python_rng"))
    return blob, read_state(path)


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json: step, pool events, seed sampler and game RNG, training seconds."""
    file = path / "state.json"
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} cannot be read ({e}); move {path} aside to resume from an earlier one") from None
    wrong = [k for k, kind in STATE_FIELDS.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)]
    if wrong:
        raise CheckpointError(
            f"{file} is damaged: field {wrong[0]!r} is missing or not a {STATE_FIELDS[wrong[0]].__name__}; move {path} "
            "aside to resume from an earlier one"
        )
    return state


def policy_from_run(model: str) -> str:
    """A run directory -> its latest checkpoint's model; a checkpoint directory -> its model; else unchanged."""
    path = Path(model)
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"run directory {path} has no complete checkpoint yet")
        return str(latest / "model")
    if (path / "model" / "config.json").is_file():
        return str(path / "model")
    return model
