"""Answer normalisation and string-match metrics (SQuAD conventions).

`normalize_answer` lower-cases, removes punctuation and the articles a/an/the, and collapses
white space. The same function decides QA-set answerability, solver rewards and evaluation, so
that "answerable" and "correct" mean the same thing everywhere.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

_PUNCT = str.maketrans("", "", string.punctuation + "‘’“”–—")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golden_answers: Iterable[str]) -> bool:
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(g) for g in golden_answers)


def substring_match(prediction: str, golden_answers: Iterable[str]) -> bool:
    """Cover EM: some normalised golden answer occurs inside the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return any(g and f" {g} " in pred for g in (normalize_answer(a) for a in golden_answers))


def f1(prediction: str, golden_answers: Iterable[str]) -> float:
    """Token-level F1, the maximum over golden answers."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golden_answers:
        gold_tokens = normalize_answer(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
