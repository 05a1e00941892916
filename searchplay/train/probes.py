"""Probe questions: a fixed set of questions the base model proposed and the game accepted.

`build_probes` plays rounds with the base model (nothing is trained) and keeps the first `count`
questions that pass the filters and verification, as a QA file (question, golden_answers);
`searchplay probe build` writes it. During training (`trainer.probe_data`, `trainer.probe_every`)
the solver answers them greedily: `probe/reward` (its training reward on them), `probe/em` and
`probe/answer_words`. They are the game's own kind of question, so they show the solver learning
the game before a test set's EM moves, and they stay the same across runs and arms.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from searchplay.config import Config
from searchplay.eval.evaluate import evaluate
from searchplay.game.rewards import solver_reward, usable_answer
from searchplay.llm.base import Engine
from searchplay.train.components import build_components


def probe(engine: Engine, retriever: Any, records: list[dict[str, Any]], cfg: Config) -> dict[str, float]:
    """The solver on the probe questions (greedy): its training reward on them (em when the reward is the
    judge's), exact match and median answer words. It moves before test EM does when the game works."""
    t0 = time.perf_counter()
    g = cfg.game
    kind = "em" if g.solver_reward == "judge" else g.solver_reward
    preds = evaluate(engine, retriever, records, cfg.rollout, cfg.search.topk)
    rewards = [
        solver_reward(
            usable_answer(p.prediction, g.reject_cut_off and p.trajectory.final_cut_off, g.max_answer_words),
            p.golden_answers,
            kind,
        )
        for p in preds
    ]
    words = [len(p.prediction.split()) for p in preds if p.prediction is not None]
    return {
        "probe/reward": sum(rewards) / len(rewards),
        "probe/em": sum(p.em for p in preds) / len(preds),
        "probe/answer_words": float(statistics.median(words)) if words else 0.0,
        "timing/probe_s": time.perf_counter() - t0,
    }


def build_probes(
    cfg: Config, count: int, max_rounds: int, on_round: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Up to `count` accepted questions from at most `max_rounds` rounds of the base model's self-play
    (`cfg` resolved; names such as 'bundled' are resolved by build_components). `on_round(round, kept)`."""
    parts = build_components(cfg, None)
    rng = random.Random(cfg.game.seed)
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for step in range(1, max_rounds + 1):
        result = parts.play(cfg, step, rng)
        for task in result.tasks:
            if task.source == "new" and task.question not in seen and len(kept) < count:
                seen.add(task.question)
                kept.append({"id": f"probe-{len(kept):04d}", "question": task.question, "golden_answers": task.golden})
        if on_round:
            on_round(step, len(kept))
        if len(kept) >= count:
            break
    return kept
