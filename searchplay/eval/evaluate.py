"""Run the solver agent over QA records and score it: the one evaluation code path.

Both `searchplay eval` and the trainer's periodic evaluation call `evaluate`. Decoding is
greedy unless a temperature is given; scores are EM, cover EM (substring) and F1 against the
golden answers, plus the answer-format rate and mean turns/searches.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.config import RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.judge.llm_judge import LLMJudge
from searchplay.judge.match import exact_match, f1, substring_match
from searchplay.llm.base import Engine
from searchplay.search.base import Retriever


@dataclass
class Prediction:
    id: str
    question: str
    golden_answers: list[str]
    prediction: str | None
    em: float
    cover_em: float
    f1: float
    trajectory: Trajectory

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "golden_answers": self.golden_answers,
                "prediction": self.prediction, "em": self.em, "cover_em": self.cover_em, "f1": self.f1,
                "trajectory": self.trajectory.summary()}


def score(prediction: str | None, golden: list[str]) -> tuple[float, float, float]:
    if prediction is None:
        return 0.0, 0.0, 0.0
    return float(exact_match(prediction, golden)), float(substring_match(prediction, golden)), f1(prediction, golden)


def evaluate(engine: Engine, retriever: Retriever, records: list[dict[str, Any]], rollout: RolloutConfig,
             topk: int = 3, batch_size: int = 16, temperature: float = 0.0,
             on_batch: Any = None) -> list[Prediction]:
    cfg = replace(rollout, temperature=temperature)
    out: list[Prediction] = []
    for lo in range(0, len(records), batch_size):
        batch = records[lo : lo + batch_size]
        prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(r["question"])) for r in batch]
        for r, traj in zip(batch, run_episodes(engine, retriever, prompts, cfg, "answer", topk)):
            em, cover, f = score(traj.final, r["golden_answers"])
            out.append(Prediction(str(r.get("id", len(out))), r["question"], r["golden_answers"], traj.final, em, cover, f, traj))
        if on_batch:
            on_batch(len(batch))
    return out


def summarize(predictions: list[Prediction]) -> dict[str, float]:
    n = max(len(predictions), 1)
    return {
        "n": float(len(predictions)),
        "em": sum(p.em for p in predictions) / n,
        "cover_em": sum(p.cover_em for p in predictions) / n,
        "f1": sum(p.f1 for p in predictions) / n,
        "answer_rate": sum(p.prediction is not None for p in predictions) / n,
        "turns_mean": statistics.fmean(len(p.trajectory.turns) for p in predictions) if predictions else 0.0,
        "searches_mean": statistics.fmean(len(p.trajectory.search_queries) for p in predictions) if predictions else 0.0,
        "retriever_errors": float(sum(p.trajectory.search_errors for p in predictions)),  # infrastructure, not the model
    }


def judge_predictions(judge: LLMJudge, predictions: list[Prediction]) -> list[bool | None]:
    """Judge verdicts: exact matches count as correct without a call, no answer as wrong; None = unknown."""
    verdicts: list[bool | None] = [True if p.em else False for p in predictions]
    pending = [i for i, p in enumerate(predictions) if not p.em and p.prediction]
    results = judge.map(judge.equivalent, [(predictions[i].question, predictions[i].golden_answers, predictions[i].prediction)
                                           for i in pending])
    for i, v in zip(pending, results):
        verdicts[i] = v.value
    return verdicts


def judge_accuracy(verdicts: list[bool | None]) -> float:
    return sum(v is True for v in verdicts) / max(len(verdicts), 1)
