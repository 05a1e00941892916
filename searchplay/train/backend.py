"""Where the policy lives during training: this process (`LocalBackend`) or Ray actors (`ray_backend.py`).

The trainer's loop is the same for both; a backend gives it
    engine          rollouts, verification and evaluation (an Engine)
    version         the learner's optimizer steps so far (which weights sampled a round)
    update(...)     both roles' updates for a round (train/update.py), returning metrics
    sync_weights()  the new weights reach the rollout engine(s), returning size and time
    save(...)       a checkpoint of model, tokenizer and learner state
    metrics()       the backend's own counters (worker restarts), cumulative
    close()
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Protocol

from searchplay.config import Config
from searchplay.game.selfplay import RoundResult
from searchplay.llm.base import Engine
from searchplay.llm.engines import engine_name, training_engine
from searchplay.llm.transformers_engine import load_model
from searchplay.rl.learner import Learner
from searchplay.search.base import Retriever
from searchplay.train.checkpoint import ADAPTER_DIR, load_trainer_state, save_checkpoint
from searchplay.train.update import planned_optimizer_steps, update_roles


class WorkerFailure(RuntimeError):
    """A learner worker died: the step cannot finish, and what the run logged stays as it was."""


class Backend(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def retriever(self) -> Retriever | None:
        """The driver's retriever when the backend provides one (else the config's is opened)."""
        ...

    @property
    def version(self) -> int: ...

    def update(self, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]: ...

    def sync_weights(self) -> dict[str, float]: ...

    def save(self, root: Path, step: int, state: dict[str, Any], cfg: Config) -> Path: ...

    def metrics(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def lora_module() -> Any:
    """searchplay.rl.lora, which imports PEFT (the optional extra 'lora'), for a config with learner.lora_rank > 0."""
    if importlib.util.find_spec("peft") is None:
        raise ValueError("learner.lora_rank > 0 needs PEFT: pip install 'searchplay[lora]'")
    return importlib.import_module("searchplay.rl.lora")


def load_policy(cfg: Config, weights: str, base: str, empty: bool = False, device: str = "") -> tuple[Any, Any, Any | None]:
    """(policy in fp32 from `weights`, tokenizer, frozen reference from `base` if KL is on). LoRA: the base
    (in learner.lora_base_dtype) with fp32 adapters (a checkpoint's, when `weights` is one) and no reference
    model (the adapters turn off). `empty`: both on the meta device, for a sharded rank other than 0 (its shards
    are filled from rank 0's weights); `device`: where to load them (default model.device)."""
    device = device or cfg.model.device
    if cfg.learner.lora_rank:
        lora = lora_module()
        model, tokenizer = load_model(base, cfg.learner.lora_base_dtype, device)
        adapters = Path(weights) / ADAPTER_DIR
        policy = lora.add_adapters(model, cfg.learner.lora_rank, cfg.learner.lora_alpha, adapters if adapters.is_dir() else None)
        return policy, tokenizer, None
    model, tokenizer = load_model(weights, "float32", device, empty)
    reference = None
    if cfg.learner.kl_coef > 0:
        reference, _ = load_model(base, "float32", device, empty)
        reference.requires_grad_(False)
    return model, tokenizer, reference


def build_learner(
    cfg: Config, model: Any, reference: Any | None, pad_id: int, checkpoint: Path | None, device: Any = None
) -> Learner:
    """The learner over `model`, with its optimizer state restored from `checkpoint` when resuming; `device`: where a
    sharded rank's model built on the meta device lives."""
    steps = planned_optimizer_steps(cfg)
    learner = Learner(model, cfg.learner, reference, steps, pad_id, cfg.rollout.temperature, device)
    if checkpoint is not None:
        learner.load_state_dict(load_trainer_state(checkpoint)[0], checkpoint)
    return learner


class LocalBackend:
    """One process: generation and learning share one fp32 model (or vLLM, synced in memory)."""

    retriever: Retriever | None = None

    def __init__(self, cfg: Config, weights: str, base: str, checkpoint: Path | None):
        self.model, self.tokenizer, reference = load_policy(cfg, weights, base)
        self.engine = training_engine(self.model, self.tokenizer, weights, cfg.model, cfg.rollout.seed, cfg.model.threads)
        self.learner = build_learner(cfg, self.model, reference, self.engine.pad_id, checkpoint)
        self.lora = lora_module() if cfg.learner.lora_rank else None
        # what vLLM is sent: a LoRA policy's merged weights (our engine generates with the policy itself)
        self.published = self.lora.MergedWeights(self.model) if self.lora and engine_name(cfg.model) == "vllm" else self.model

    @property
    def version(self) -> int:
        return self.learner.version

    def update(self, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]:
        return update_roles(self.learner, result, cfg, step, version)  # inside the trainer's engine.asleep()

    def sync_weights(self) -> dict[str, float]:
        return self.engine.sync_weights(self.published)

    def save(self, root: Path, step: int, state: dict[str, Any], cfg: Config) -> Path:
        """A LoRA policy is saved merged (a plain model directory), its adapters beside it for resuming."""
        keep, learner_state = cfg.trainer.keep_checkpoints, self.learner.state_dict()
        if self.lora is None:
            return save_checkpoint(root, step, self.model, self.tokenizer, learner_state, state, cfg, keep)
        merged = self.lora.merged_state_dict(self.model)
        base = self.model.get_base_model()
        return save_checkpoint(root, step, base, self.tokenizer, learner_state, state, cfg, keep, merged, adapters=self.model)

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
