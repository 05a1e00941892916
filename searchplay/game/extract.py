"""Question extraction and the rule filters (docs/method.md §1), each rejection named.

The filters run in a fixed order and the first that fails names the reason, so the counts per
reason add up to the number of rejected rollouts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from searchplay.agent.trajectory import Trajectory
from searchplay.config import GameConfig
from searchplay.game.seeds import Seed, seed_passage
from searchplay.judge.match import normalize_answer

NO_QUESTION = "no_question_tag"
NO_ANSWER_SPAN = "no_answer_span"
SPAN_TOO_LONG = "answer_span_too_long"
SPAN_NOT_IN_PASSAGE = "answer_not_in_passage"
QUESTION_CUT_OFF = "question_cut_off"
DOCUMENT_REFERENCE = "refers_to_documents"
NOT_A_QUESTION = "not_a_question"
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
    NO_ANSWER_SPAN,
    SPAN_TOO_LONG,
    SPAN_NOT_IN_PASSAGE,
    QUESTION_CUT_OFF,
    DOCUMENT_REFERENCE,
    NOT_A_QUESTION,
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


# What a proposer's documents are called when a question points at them instead of asking about the
# world ("What is the name of the plant in the above list?"): a solver never sees those documents.
_DOC_NOUNS = (
    r"(?:list|passages?|documents?|texts?|articles?|excerpts?|paragraphs?|context|information|evidence|tables?"
    r"|search results?)"
)
DOCUMENT_REFERENCE_PATTERN = re.compile(
    rf"\b(?:this|these|the|that|those)\s+(?:above|following|given|provided|retrieved|same)\s+{_DOC_NOUNS}\b"
    rf"|\b(?:this|these)\s+{_DOC_NOUNS}\b"
    rf"|\b(?:in|from|of|on|by|according to)\s+the\s+{_DOC_NOUNS}\b"
    rf"|\bthe\s+{_DOC_NOUNS}\s+(?:says?|said|states?|describes?|mentions?|lists?|shows?|provides?)\b"
    r"|\b(?:the above|mentioned above|listed above|shown above|given above)\b",
    re.IGNORECASE,
)


def refers_to_documents(question: str) -> bool:
    """Whether the question points at the proposer's retrieved documents ("in the passage", "the above list")."""
    return DOCUMENT_REFERENCE_PATTERN.search(question) is not None


@dataclass(frozen=True)
class Extraction:
    question: str | None
    rejection: str | None  # one of REJECTION_REASONS, None when kept
    answer: str | None = None  # the span the proposer chose (game.proposer_span = "own"); None: the seed's answer


def answered_seed(seed: Seed, extraction: Extraction) -> Seed:
    """The seed a question answers: the proposer's own span, when it chose one (no aliases), else the seed."""
    return replace(seed, answer=extraction.answer, aliases=()) if extraction.answer else seed


# "question? Answer: span" (game.proposer_span = "own"): what follows the mark, up to a line break or a tag
_ANSWER_MARK = re.compile(r"\banswer\s*[:=]\s*", re.IGNORECASE)
_QUESTION_MARK = re.compile(r"\bquestion\s*[:=]\s*", re.IGNORECASE)


def own_span(traj: Trajectory) -> tuple[str, str | None]:
    """(question, chosen answer) of a proposer that writes "Answer: span. Question: question?" (what the prompt asks:
    the answer first, so that it is never left out) or "question? Answer: span" in its question tag; the answer is
    None without an answer mark. The tag's whole body is read (a guided turn's content is only its first line)."""
    body = traj.final or ""
    written = traj.turns[-1].text if traj.turns else ""
    if "<question>" in written:
        body = written.rsplit("<question>", 1)[1].split("</", 1)[0]
    answer_mark = _ANSWER_MARK.search(body)
    if answer_mark is None:
        return traj.final or "", None
    question_mark = _QUESTION_MARK.search(body, answer_mark.end())
    if question_mark is not None:  # the answer first
        answer, question = body[answer_mark.end() : question_mark.start()], _first_line(body[question_mark.end() :])
    else:
        lines = [line.strip() for line in body[: answer_mark.start()].split("\n") if _WORD.search(line)]
        answer, question = _first_line(body[answer_mark.end() :]), (lines[-1] if lines else "")
    answer = answer.strip().strip("\"'.,;").strip()
    return question, answer or None


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


_WORD = re.compile(r"\w")


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
    answer = None
    if cfg.proposer_span == "own":  # the proposer chose its answer: a short span of the seed passage
        question, answer = own_span(traj)
        if not answer or not normalize_answer(answer):
            return Extraction(question, NO_ANSWER_SPAN)
        if len(answer.split()) > cfg.own_span_words:
            return Extraction(question, SPAN_TOO_LONG, answer)
        if not mentions(seed_passage(seed)[0], [answer]):
            return Extraction(question, SPAN_NOT_IN_PASSAGE, answer)
        seed = answered_seed(seed, Extraction(question, None, answer))

    def reject(reason: str) -> Extraction:
        return Extraction(question, reason, answer)

    if cfg.reject_cut_off and traj.final_cut_off:
        return reject(QUESTION_CUT_OFF)
    if cfg.reject_document_references and refers_to_documents(question):
        return reject(DOCUMENT_REFERENCE)
    if cfg.reject_non_questions and not question.rstrip().endswith("?"):
        return reject(NOT_A_QUESTION)

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
    return Extraction(question, None, answer)
