"""Checkpoints: written whole to a temporary directory, then renamed into place.

    checkpoints/step-N/model/        Hugging Face model directory (safetensors; transformers/vLLM load it as is;
                                     a LoRA run's merged weights, its adapters in model/adapter/)
    checkpoints/step-N/trainer.pt    optimizer, scheduler, learner RNG, torch/python RNG states
    checkpoints/step-N/state.json    step, pool events count, seed sampler state, metrics lines
    checkpoints/step-N/config.toml   resolved config

A crash while saving leaves only `step-N.tmp`, which is never taken for a checkpoint; the files
are fsynced before the rename publishes them, and an existing `step-N` is replaced only once the
new one is in place. The newest `step-N` is "latest". Only the newest `keep` checkpoints are kept.
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
from searchplay.outdir import fsync_tree, replace_dir

_STEP_DIR = re.compile(r"^step-(\d+)$")
ADAPTER_DIR = "adapter"  # a LoRA run's adapters inside a checkpoint's model directory


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
) -> Path:
    """`weights`: the full state of a sharded model (Learner.full_weights) or a LoRA policy's merged weights;
    None: the model's own. `adapters`: a LoRA policy, whose adapters are kept in model/adapter/ for resuming."""
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model", state_dict=weights)
    if adapters is not None:
        adapters.save_pretrained(tmp / "model" / ADAPTER_DIR)
    tokenizer.save_pretrained(tmp / "model")
    torch.save({**learner_state, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    (tmp / "config.toml").write_text(to_toml(cfg))
    fsync_tree(tmp)
    replace_dir(tmp, final)  # an older step-N (a replayed step) is removed only after the new one is in place
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


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
    blob = torch.load(
        path / "trainer.pt", weights_only=False, map_location="cpu"
    )  # the optimizer moves its state to the parameters' device
    torch.set_rng_state(blob.pop("torch_rng"))
    random.setstate(blob.pop("python_rng"))
    return blob, read_state(path)


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json: step, pool events, seed sampler and game RNG, training seconds."""
    return json.loads((path / "state.json").read_text())


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
