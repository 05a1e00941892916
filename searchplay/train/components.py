"""Build what a self-play run needs from a config: engine, retriever, judge, seeds, pool."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from searchplay.assets.names import resolve_config
from searchplay.config import Config
from searchplay.eval.data import load_dataset
from searchplay.game.pool import QuestionPool
from searchplay.game.seeds import SeedSampler, labelled_seeds, load_seeds, seed_passage
from searchplay.game.selfplay import RoundResult, play_round, play_supervised_round, quiet
from searchplay.judge.llm_judge import LLMJudge
from searchplay.llm.base import Engine
from searchplay.llm.engines import open_engine
from searchplay.search.base import Retriever
from searchplay.search.resolve import open_retriever


@dataclass
class Components:
    engine: Engine
    retriever: Retriever
    judge: LLMJudge | None
    sampler: SeedSampler
    pool: QuestionPool
    referee: Engine | None = None  # game.verifier_model: a frozen model that verifies instead of the policy

    def play(self, cfg: Config, step: int, rng: random.Random, phase: Callable[[str], None] = quiet) -> RoundResult:
        """One round of the configured game: self-play, or the supervised control on labelled questions;
        `phase` is told which part of the round is running."""
        if cfg.game.mode == "supervised":
            return play_supervised_round(self.engine, self.retriever, self.sampler, cfg, step, self.judge, phase)
        return play_round(self.engine, self.retriever, self.sampler, self.pool, cfg, step, rng, self.judge, phase, self.referee)

    def search_metrics(self) -> dict[str, float]:
        """Cumulative retrieval cache counters (when the cache is on)."""
        stats = getattr(self.retriever, "stats", None)
        return {f"search/{k}": float(v) for k, v in stats().items()} if callable(stats) else {}


def build_components(
    cfg: Config, pool_path: str | None, engine: Engine | None = None, retriever: Retriever | None = None
) -> Components:
    """Everything a round needs; names like 'bundled' in `cfg` are resolved to paths here. `retriever`:
    one the caller already has (the Ray backend's), else the one `cfg.search` names."""
    cfg = resolve_config(cfg)
    engine = engine or open_engine(cfg.model.path, cfg.model, cfg.rollout.seed)
    judge = LLMJudge(cfg.judge) if cfg.judge.base_url else None
    seeds = labelled_seeds(load_dataset(cfg.game.train_data)) if cfg.game.mode == "supervised" else load_seeds(cfg.game.seeds)
    if cfg.game.extractive and cfg.game.mode == "selfplay":
        for seed in seeds:  # every seed is checked before the first round, not when it is drawn
            seed_passage(seed)
    referee = open_engine(cfg.game.verifier_model, cfg.model, cfg.rollout.seed) if cfg.game.verifier_model else None
    return Components(
        engine,
        retriever or open_retriever(cfg.search),
        judge,
        SeedSampler(seeds, cfg.game.seed),
        QuestionPool(pool_path),
        referee,
    )
