"""Question extraction and the rule filters (docs/method.md §1), each rejection named.

The filters run in a fixed order and the first that fails names the reason, so the counts per
reason add up to the number of rejected rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from searchplay.agent.trajectory import Trajectory
from searchplay.config import GameConfig
from searchplay.game.seeds import Seed
from searchplay.judge.match import normalize_answer

NO_QUESTION = "no_question_tag"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
ANSWER_IN_QUESTION = "answer_in_question"
ANSWER_WORD_IN_QUESTION = "answer_word_in_question"
TOO_FEW_SEARCHES = "too_few_searches"
REPEATED_SEARCHES = "repeated_searches"
NO_RETRIEVAL = "no_retrieval"
ANSWER_IN_QUERY = "answer_in_query"
VERIFY_FAILED = "verification_failed"
VERIFY_ERROR = "verifier_error"
REJECTION_REASONS = (
    NO_QUESTION,
    TOO_SHORT,
    TOO_LONG,
    ANSWER_IN_QUESTION,
    ANSWER_WORD_IN_QUESTION,
    TOO_FEW_SEARCHES,
    REPEATED_SEARCHES,
    NO_RETRIEVAL,
    ANSWER_IN_QUERY,
    VERIFY_FAILED,
    VERIFY_ERROR,
)


@dataclass(frozen=True)
class Extraction:
    question: str | None
    rejection: str | None  # one of REJECTION_REASONS, None when kept


def mentions(text: str, answers: list[str]) -> bool:
    """Whether a normalised answer occurs in the normalised text on word boundaries."""
    haystack = f" {normalize_answer(text)} "
    return any(n and f" {n} " in haystack for n in (normalize_answer(a) for a in answers))


# Words too common to count as part of an answer ("Christina, Queen of Sweden": queen, sweden, christina).
STOP_WORDS = frozenset(
    ["of", "and", "or", "in", "on", "at", "to", "for", "from", "by", "with", "de", "la", "le", "du", "von", "van", "der"]
)


def shares_answer_word(text: str, answers: list[str]) -> bool:
    """Whether the text holds any word of an answer (normalised, stop words aside): a partial leak."""
    words = set(normalize_answer(text).split())
    return any(w in words for a in answers for w in normalize_answer(a).split() if w not in STOP_WORDS)


def extract_question(traj: Trajectory, seed: Seed, cfg: GameConfig) -> Extraction:
    question = traj.final if traj.stop_reason == "question" else None
    if not question:
        return Extraction(None, NO_QUESTION)

    def reject(reason: str) -> Extraction:
        return Extraction(question, reason)

    if len(question.split()) < cfg.min_question_words:
        return reject(TOO_SHORT)
    if len(question) > cfg.max_question_chars:
        return reject(TOO_LONG)
    if mentions(question, seed.golden):
        return reject(ANSWER_IN_QUESTION)
    if cfg.reject_answer_words and shares_answer_word(question, seed.golden):
        return reject(ANSWER_WORD_IN_QUESTION)
    queries = traj.search_queries
    if len(queries) < cfg.min_searches:
        return reject(TOO_FEW_SEARCHES)
    normalised = [normalize_answer(q) for q in queries]
    if len(set(normalised)) < len(normalised):
        return reject(REPEATED_SEARCHES)
    if not traj.retrieved:
        return reject(NO_RETRIEVAL)
    if cfg.reject_answer_in_query and any(mentions(q, seed.golden) for q in queries):
        return reject(ANSWER_IN_QUERY)
    return Extraction(question, None)
