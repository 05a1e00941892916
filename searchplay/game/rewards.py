"""Rewards of the two roles (docs/method.md, "Rewards").

The solver's reward is chosen by `game.solver_reward`: `em` (normalised exact match), `f1`
(token F1, partial credit), `cover_em` (a golden answer occurs in the answer) or `judge` (exact
match, else the LLM judge's verdict: the paper's semantic correctness). The rule-based kinds
stand in for the judge when no judge model is at hand.
"""

from __future__ import annotations

from typing import Literal

from searchplay.judge.match import exact_match, f1, substring_match

ProposerRewardKind = Literal["1-acc", "intermediate", "format_only"]
SolverRewardKind = Literal["em", "f1", "cover_em", "judge"]
MAX_ANSWER_TAGS = 10  # more final tags than this divides the reward by 4 (tag spamming)


def solver_reward(
    prediction: str | None,
    golden_answers: list[str],
    kind: SolverRewardKind = "em",
    answer_tags: int = 1,
    judge_verdict: bool | None = None,
) -> float:
    """0 without an answer; else the chosen match score in [0, 1] (judge: unknown verdict = 0)."""
    if prediction is None:
        return 0.0
    if kind == "em":
        reward = float(exact_match(prediction, golden_answers))
    elif kind == "cover_em":
        reward = float(substring_match(prediction, golden_answers))
    elif kind == "f1":
        reward = f1(prediction, golden_answers)
    elif kind == "judge":
        reward = 1.0 if exact_match(prediction, golden_answers) or judge_verdict is True else 0.0
    else:
        raise ValueError(f"unknown solver reward {kind!r}; use em, f1, cover_em or judge")
    return reward / 4 if answer_tags > MAX_ANSWER_TAGS else reward


def success_rate(rewards: list[float]) -> float:
    """The solvers' mean reward: for 0/1 rewards the fraction of successful rollouts (the paper's s)."""
    return sum(rewards) / len(rewards) if rewards else 0.0


def proposer_reward(success: float, kind: ProposerRewardKind = "1-acc", left: float = 0.0, right: float = 1.0) -> float:
    if kind == "1-acc":
        return 1.0 - success
    if kind == "intermediate":
        return 4 * (left + success) * (right - success) if 0 < success < 1 else 0.0
    if kind == "format_only":
        return 1.0
    raise ValueError(f"unknown proposer reward kind {kind!r}; use 1-acc, intermediate or format_only")
