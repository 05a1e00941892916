"""Run the solver agent over QA records and score it: the one evaluation code path.

Both `searchplay eval` and the trainer's periodic evaluation call `evaluate`. Decoding is
greedy unless a temperature is given; scores are EM, cover EM (substring) and F1 against the
golden answers, plus the answer-format rate and mean turns/searches, and two links of the chain:
whether the model's own searches found a passage holding a golden answer (`search_recall`) and
whether the raw question, searched with the same retriever and top-k, does (`question_recall`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.config import RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.judge.llm_judge import LLMJudge
from searchplay.judge.match import exact_match, f1, substring_match
from searchplay.llm.base import Engine
from searchplay.search.base import Retriever, search_or_none


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
    found: bool = False  # a passage its searches returned holds a golden answer
    question_found: bool | None = None  # the raw question's top-k holds one (None: that search failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "golden_answers": self.golden_answers,
            "prediction": self.prediction,
            "em": self.em,
            "cover_em": self.cover_em,
            "f1": self.f1,
            "found": self.found,
            "question_found": self.question_found,
            "trajectory": self.trajectory.summary(),
        }


def score(prediction: str | None, golden: list[str]) -> tuple[float, float, float]:
    if prediction is None:
        return 0.0, 0.0, 0.0
    return float(exact_match(prediction, golden)), float(substring_match(prediction, golden)), f1(prediction, golden)


def evaluate(
    engine: Engine,
    retriever: Retriever,
    records: list[dict[str, Any]],
    rollout: RolloutConfig,
    topk: int = 3,
    batch_size: int = 16,
    temperature: float = 0.0,
    on_batch: Callable[[list[Prediction]], None] | None = None,
) -> list[Prediction]:
    """Greedy (or sampled) solver episodes over `records`; `on_batch` gets each finished batch's predictions."""
    cfg = replace(rollout, temperature=temperature)
    out: list[Prediction] = []
    for lo in range(0, len(records), batch_size):
        batch = records[lo : lo + batch_size]
        prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(r["question"])) for r in batch]
        raw = search_or_none(retriever, [r["question"] for r in batch], topk)
        for r, traj, hits in zip(batch, run_episodes(engine, retriever, prompts, cfg, "answer", topk), raw):
            gold = r["golden_answers"]
            em, cover, f = score(traj.final, gold)
            found = any(substring_match(h["text"], gold) for h in traj.retrieved)
            question_found = None if hits is None else any(substring_match(h.text, gold) for h in hits)
            out.append(
                Prediction(str(r.get("id", len(out))), r["question"], gold, traj.final, em, cover, f, traj, found, question_found)
            )
        if on_batch:
            on_batch(out[-len(batch) :])
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means over prediction records (`Prediction.to_dict()`, or lines of a predictions file; files written before
    the recall fields existed give no recall figures)."""
    n = max(len(records), 1)
    trajs = [r["trajectory"] for r in records]
    recall: dict[str, float] = {}
    if records and all("found" in r for r in records):
        recall["search_recall"] = sum(bool(r["found"]) for r in records) / n
        asked = [r["question_found"] for r in records if r.get("question_found") is not None]
        if asked:
            recall["question_recall"] = sum(asked) / len(asked)
    return {
        "n": float(len(records)),
        "em": sum(r["em"] for r in records) / n,
        "cover_em": sum(r["cover_em"] for r in records) / n,
        "f1": sum(r["f1"] for r in records) / n,
        "answer_rate": sum(r["prediction"] is not None for r in records) / n,
        "turns_mean": statistics.fmean(t["turns"] for t in trajs) if trajs else 0.0,
        "searches_mean": statistics.fmean(t["searches"] for t in trajs) if trajs else 0.0,
        "retriever_errors": float(sum(t.get("search_errors", 0) for t in trajs)),  # infrastructure, not the model
        **recall,
    }


def judge_predictions(judge: LLMJudge, records: list[dict[str, Any]]) -> list[bool | None]:
    """Judge verdicts: exact matches count as correct without a call, no answer as wrong; None = unknown."""
    verdicts: list[bool | None] = [bool(r["em"]) for r in records]
    pending = [i for i, r in enumerate(records) if not r["em"] and r["prediction"]]
    results = judge.map(
        judge.equivalent, [(records[i]["question"], records[i]["golden_answers"], records[i]["prediction"]) for i in pending]
    )
    for i, v in zip(pending, results):
        verdicts[i] = v.value
    return verdicts


def judge_accuracy(verdicts: list[bool | None]) -> float:
    return sum(v is True for v in verdicts) / max(len(verdicts), 1)
