"""Rewards of the two roles (docs/method.md, "Rewards").

The solver's reward is chosen by `game.solver_reward`: `em` (normalised exact match), `f1`
(token F1, partial credit), `em_partial` (exact match 1, else half credit scaled by brevity for an
answer that contains a golden answer), `cover_em` (a golden answer occurs in the answer) or
`judge` (exact match, else the LLM judge's verdict: the paper's semantic correctness), or
`extractive` (em_partial, but only for an answer that occurs in a passage the solver retrieved:
the extractive game pays copying what was found, never a guess from memory or no search). The
rule-based kinds stand in for the judge when no judge model is at hand. The caller passes no
prediction (reward 0) for an answer cut off by the token cap or longer than game.max_answer_words.
"""

from __future__ import annotations

from typing import Literal

from searchplay.judge.match import exact_match, f1, normalize_answer, substring_match

ProposerRewardKind = Literal["1-acc", "intermediate", "format_only", "frontier"]
SolverRewardKind = Literal["em", "f1", "em_partial", "cover_em", "judge", "extractive"]
PARTIAL_CREDIT = 0.5  # em_partial: the most a non-exact answer earns (a one-word-longer answer gets less)
MAX_ANSWER_TAGS = 10  # more final tags than this divides the reward by 4 (tag spamming)


def solver_reward(
    prediction: str | None,
    golden_answers: list[str],
    kind: SolverRewardKind = "em",
    answer_tags: int = 1,
    judge_verdict: bool | None = None,
    retrieved: list[str] | None = None,
) -> float:
    """0 without an answer; else the chosen match score in [0, 1] (judge: unknown verdict = 0). `retrieved`:
    the texts of the passages the solver's searches returned (extractive)."""
    if prediction is None:
        return 0.0
    if kind == "em":
        reward = float(exact_match(prediction, golden_answers))
    elif kind == "cover_em":
        reward = float(substring_match(prediction, golden_answers))
    elif kind == "f1":
        reward = f1(prediction, golden_answers)
    elif kind == "em_partial":
        reward = 1.0 if exact_match(prediction, golden_answers) else brevity_credit(prediction, golden_answers)
    elif kind == "judge":
        reward = 1.0 if exact_match(prediction, golden_answers) or judge_verdict is True else 0.0
    elif kind == "extractive":
        copied = any(substring_match(text, [prediction]) for text in retrieved or [])
        reward = 0.0 if not copied else solver_reward(prediction, golden_answers, "em_partial")
    else:
        raise ValueError(f"unknown solver reward {kind!r}; use em, f1, em_partial, cover_em, judge or extractive")
    return reward / 4 if answer_tags > MAX_ANSWER_TAGS else reward


def brevity_credit(prediction: str, golden_answers: list[str]) -> float:
    """PARTIAL_CREDIT x (golden words / answer words) for an answer holding a golden answer, else 0:
    "Paris" earns 1 (exact), "Paris, France" 0.25, "The capital of France is Paris" 0.08."""
    words = len(normalize_answer(prediction).split())
    held = [len(n.split()) for n in (normalize_answer(a) for a in golden_answers) if n and substring_match(prediction, [n])]
    return PARTIAL_CREDIT * min(1.0, max(held) / words) if held and words else 0.0


def usable_answer(final: str | None, cut_off: bool, max_words: int) -> str | None:
    """The answer a reward may look at: none when the token cap cut it before its closing tag, or when
    it is longer than `max_words` words (0: no limit) — a sentence is not an answer a user accepts."""
    if final is None or cut_off or (max_words and len(final.split()) > max_words):
        return None
    return final


def success_rate(rewards: list[float]) -> float:
    """The solvers' mean reward: for 0/1 rewards the fraction of successful rollouts (the paper's s)."""
    return sum(rewards) / len(rewards) if rewards else 0.0


def frontier_reward(success: float, solver_n: int, validity: float) -> float:
    """`validity` for a question that passed the filters and verification, plus (1 - validity) x g(s), where
    g is 0 for questions the solver never or always solves and (1 - s) / (1 - 1/n) capped at 1 in between:
    the hardest question some rollout still solves earns most (Dr. Zero's (n - k) / (n - 1) for k of n
    successes), since only questions with 0 < k < n give the solver's group a learning signal."""
    if not 0 < success < 1:
        return validity
    top = 1 - 1 / solver_n if solver_n > 1 else 1.0
    return validity + (1 - validity) * min(1.0, (1 - success) / top)


def proposer_reward(
    success: float,
    kind: ProposerRewardKind = "1-acc",
    left: float = 0.0,
    right: float = 1.0,
    solver_n: int = 5,
    validity: float = 0.1,
) -> float:
    if kind == "frontier":
        return frontier_reward(success, solver_n, validity)
    if kind == "1-acc":
        return 1.0 - success
    if kind == "intermediate":
        return 4 * (left + success) * (right - success) if 0 < success < 1 else 0.0
    if kind == "format_only":
        return 1.0
    raise ValueError(f"unknown proposer reward kind {kind!r}; use 1-acc, intermediate, format_only or frontier")
