"""The rollout engine sleeps through the learner's update and the weight sync that follows, then wakes:
sleep -> update -> sync -> wake, every step. The real trainer runs the tiny config; its engine is wrapped by
a recorder, a fake only for what cannot run here: vLLM's sleep mode needs a CUDA GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from searchplay.config import load_config
from searchplay.train import trainer

ROOT = Path(__file__).resolve().parents[1]


class RecordingEngine:
    """The real engine, with the calls the trainer makes around an update written down."""

    def __init__(self, engine: Any, calls: list[str]):
        self.engine, self.calls = engine, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        self.calls.append("sleep")
        try:
            yield
        finally:
            self.calls.append("wake")

    def sync_weights(self, model: Any) -> dict[str, float]:
        self.calls.append("sync")
        return self.engine.sync_weights(model)


def recorded_train(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *overrides: str) -> list[str]:
    """The calls around the updates of a 2-step run of the tiny config."""
    calls: list[str] = []
    open_backend = trainer._open_backend

    def recorded(cfg: Any, checkpoint: Any) -> Any:
        backend = open_backend(cfg, checkpoint)
        backend.engine = RecordingEngine(backend.engine, calls)
        update = backend.update

        def recorded_update(*args: Any) -> dict[str, float]:
            calls.append("update")
            return update(*args)

        backend.update = recorded_update
        return backend

    monkeypatch.setattr(trainer, "_open_backend", recorded)
    cfg = load_config(ROOT / "configs/tiny-test.toml", ["trainer.steps=2", "trainer.eval_every=0", *overrides])
    summary = trainer.train(cfg, tmp_path / "run")
    assert summary.steps == 2
    return calls


def test_the_engine_sleeps_through_update_and_sync(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert recorded_train(monkeypatch, tmp_path) == ["sleep", "update", "sync", "wake"] * 2


def test_a_round_without_an_optimizer_step_sends_no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    frozen = recorded_train(monkeypatch, tmp_path, "proposer.train=false", "solver.train=false")
    assert frozen == ["sleep", "update", "wake"] * 2  # the engine already holds the weights: nothing changed
