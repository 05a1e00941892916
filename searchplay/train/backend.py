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

from pathlib import Path
from typing import Any, Protocol

from searchplay.config import Config
from searchplay.game.selfplay import RoundResult
from searchplay.llm.base import Engine
from searchplay.llm.engines import training_engine
from searchplay.llm.transformers_engine import load_model
from searchplay.rl.learner import Learner
from searchplay.search.base import Retriever
from searchplay.train.checkpoint import load_trainer_state, save_checkpoint
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


def load_policy(cfg: Config, weights: str, base: str) -> tuple[Any, Any, Any | None]:
    """(policy in fp32 from `weights`, tokenizer, frozen reference from `base` if KL is on)."""
    model, tokenizer = load_model(weights, "float32", cfg.model.device)
    reference = None
    if cfg.learner.kl_coef > 0:
        reference, _ = load_model(base, "float32", cfg.model.device)
        reference.requires_grad_(False)
    return model, tokenizer, reference


def build_learner(cfg: Config, model: Any, reference: Any | None, pad_id: int, checkpoint: Path | None) -> Learner:
    """The learner over `model`, with its optimizer state restored from `checkpoint` when resuming."""
    learner = Learner(model, cfg.learner, reference, planned_optimizer_steps(cfg), pad_id, cfg.rollout.temperature)
    if checkpoint is not None:
        learner.load_state_dict(load_trainer_state(checkpoint)[0])
    return learner


class LocalBackend:
    """One process: generation and learning share one fp32 model (or vLLM, synced in memory)."""

    retriever: Retriever | None = None

    def __init__(self, cfg: Config, weights: str, base: str, checkpoint: Path | None):
        self.model, self.tokenizer, reference = load_policy(cfg, weights, base)
        self.engine = training_engine(self.model, self.tokenizer, weights, cfg.model, cfg.rollout.seed, cfg.model.threads)
        self.learner = build_learner(cfg, self.model, reference, self.engine.pad_id, checkpoint)

    @property
    def version(self) -> int:
        return self.learner.version

    def update(self, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]:
        return update_roles(self.learner, result, cfg, step, version)  # inside the trainer's engine.asleep()

    def sync_weights(self) -> dict[str, float]:
        return self.engine.sync_weights(self.model)

    def save(self, root: Path, step: int, state: dict[str, Any], cfg: Config) -> Path:
        return save_checkpoint(
            root, step, self.model, self.tokenizer, self.learner.state_dict(), state, cfg, cfg.trainer.keep_checkpoints
        )

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
