"""Rewards of the two roles (DESIGN.md §1 step 7)."""

from __future__ import annotations

from typing import Literal

from searchplay.judge.match import exact_match

ProposerRewardKind = Literal["1-acc", "intermediate", "format_only"]
MAX_ANSWER_TAGS = 10  # more final tags than this divides the reward by 4 (tag spamming)


def solver_reward(prediction: str | None, golden_answers: list[str], answer_tags: int = 1,
                  judge_verdict: bool | None = None) -> float:
    """0 without an answer; 1 on normalised exact match; else the judge's verdict (unknown = 0)."""
    if prediction is None:
        return 0.0
    reward = 1.0 if exact_match(prediction, golden_answers) or judge_verdict is True else 0.0
    return reward / 4 if answer_tags > MAX_ANSWER_TAGS else reward


def success_rate(rewards: list[float]) -> float:
    """Fraction of a question's solver rollouts with reward > 0."""
    return sum(r > 0 for r in rewards) / len(rewards) if rewards else 0.0


def proposer_reward(success: float, kind: ProposerRewardKind = "1-acc", left: float = 0.0, right: float = 1.0) -> float:
    if kind == "1-acc":
        return 1.0 - success
    if kind == "intermediate":
        return 4 * (left + success) * (right - success) if 0 < success < 1 else 0.0
    if kind == "format_only":
        return 1.0
    raise ValueError(f"unknown proposer reward kind {kind!r}; use 1-acc, intermediate or format_only")
