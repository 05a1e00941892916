"""Build `wiki-span-seeds`: extractive proposer seeds, a short answer span and the passage it was taken from.

The extractive game (`game.extractive`) asks questions whose answers a small reader can copy: each
seed is one passage of the corpus and one span of its text, at most `MAX_SPAN_WORDS` words, that
names something other than the passage's own subject: a run of capitalised words ("Battle of
Hastings", "Pope Gregory") or a year. A span must occur once in its passage (so "the answer in this
passage" is unambiguous) and must not overlap the title (questions about the title are the
title-seed game's). One span per passage, drawn with a seeded generator, so the same corpus and
settings give the same seeds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from searchplay.judge.match import normalize_answer
from searchplay.search.corpus import read_passages

MAX_SPAN_WORDS = 5
# Words that open sentences or join names; a span never starts or ends with one, and a single one is no span.
# fmt: off
_FUNCTION_WORDS = frozenset([
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "from", "by", "with", "as", "is", "was",
    "it", "its", "he", "she", "his", "her", "they", "their", "this", "that", "these", "those", "after", "before",
    "during", "when", "while", "since", "until", "between", "about", "also", "but", "if", "not", "no", "de", "la",
    "le", "du", "von", "van", "der",
])
# fmt: on
_CAPITALISED = re.compile(r"[A-Z][\w'’.-]*[\w.]|[A-Z]")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-2][0-9])\b")
# An initial or short abbreviation before a capitalised word ("Gideon J. Pillow", "Brig. Gen.") keeps its period;
# a period inside a word (U.S) stays; any other period ends a sentence.
_TOKEN = re.compile(r"[A-Z][a-z]{0,3}\.(?=\s+[A-Z])|[\w'’-]+(?:\.[\w'’-]+)*|[^\w\s]")


def capitalised_runs(text: str) -> list[str]:
    """Runs of capitalised words (joined by 'of', 'the', 'de', ...) that do not open a sentence, 1-5 words."""
    spans: list[list[str]] = []
    run: list[str] = []
    joiners: list[str] = []
    sentence_start = True
    for tok in _TOKEN.findall(text):
        if _CAPITALISED.fullmatch(tok) and not (sentence_start and tok.lower() in _FUNCTION_WORDS):
            run.extend(joiners)
            run.append(tok)
            joiners = []
            opened_sentence = sentence_start and len(run) == 1
            if opened_sentence:  # a capitalised first word of a sentence is a name only if more follow
                run[0] = "\0" + run[0]
        elif run and tok.lower() in ("of", "the", "de", "von", "van", "da", "del") and not joiners:
            joiners = [tok]
        else:
            spans.append(run)
            run, joiners = [], []
        sentence_start = tok in (".", "!", "?", ":", ";", '"')
    spans.append(run)
    out = []
    for words in spans:
        first_in_sentence = bool(words) and words[0].startswith("\0")
        words = [w.lstrip("\0") for w in words]
        while words and words[0].lower() in _FUNCTION_WORDS:  # "The Confederates" -> "Confederates"
            words = words[1:]
        if not words or len(words) > MAX_SPAN_WORDS or (first_in_sentence and len(words) == 1):
            continue
        words[-1] = re.sub(r"['’]s$", "", words[-1])  # "Euclid's" -> "Euclid"
        if words[-1].lower() in _FUNCTION_WORDS:
            continue
        out.append(" ".join(words))
    return out


def span_candidates(title: str, text: str) -> list[str]:
    """The spans a question could ask for: capitalised runs and years, once in the text, apart from the title."""
    title_words = set(normalize_answer(title).split())
    found = dict.fromkeys([*capitalised_runs(text), *_YEAR.findall(text)])
    padded = f" {normalize_answer(text)} "
    out = []
    for span in found:
        norm = normalize_answer(span)
        if not norm or set(norm.split()) & title_words or len(norm.split()) > MAX_SPAN_WORDS:
            continue
        if padded.count(f" {norm} ") != 1:
            continue
        out.append(span)
    return out


def draw_span_seeds(corpus_file: Path, count: int, hops_min: int, hops_max: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `count` seeds from distinct passages, {answer, hops, doc_id, title, passage}; and how many passages had a span."""
    rng = random.Random(seed)
    pool = []
    for p in read_passages(corpus_file):
        spans = span_candidates(p.title, p.text)
        if spans:
            pool.append((p, spans))
    chosen = rng.sample(pool, min(count, len(pool)))
    seeds = [
        {
            "answer": rng.choice(spans),
            "hops": rng.randint(hops_min, hops_max),
            "doc_id": p.id,
            "title": p.title,
            "passage": p.text,
        }
        for p, spans in chosen
    ]
    return seeds, len(pool)
