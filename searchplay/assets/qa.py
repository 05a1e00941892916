"""Build the bundled QA sets from the DPR topic files inside pyserini 0.19.2's Anserini jar.

The jar is read as a zip (no Java). Each topic file is tab-separated with CSV quoting, so a
quoted question may contain tabs or span lines; the second column is a Python-literal list of
answer strings. Output: Search-R1 style jsonl `{"id", "question", "golden_answers"}`.

The dev splits (`nq-dev`, `triviaqa-dev`) are for choosing settings; any dev question whose
normalised text also occurs in the test split of the same dataset is dropped, so that nothing
tuned on dev has seen a test question.

`*-answerable` subsets keep questions with a normalised golden answer occurring (on word
boundaries) in some normalised corpus passage; each record names that passage in
`evidence_id`. One Aho-Corasick pass over the corpus finds all answers at once.
"""

from __future__ import annotations

import ast
import csv
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ahocorasick

from searchplay.judge.match import normalize_answer
from searchplay.search.corpus import read_passages
from searchplay.sources import SourceFile, package_file

JAR = ("pyserini", "pyserini/resources/jars/anserini-0.16.2-fatjar.jar", "==0.19.2")
TOPIC_FILES = {
    "nq-test": "topics-and-qrels/topics.dpr.nq.test.txt",
    "triviaqa-test": "topics-and-qrels/topics.dpr.trivia.test.txt",
    "nq-dev": "topics-and-qrels/topics.dpr.nq.dev.txt",
    "triviaqa-dev": "topics-and-qrels/topics.dpr.trivia.dev.txt",
}


class TopicFormatError(ValueError):
    """A topic record that does not parse; names the file and record."""


def jar_source() -> SourceFile:
    return package_file(*JAR)


def parse_dpr_topics(text: str, name: str, id_prefix: str) -> list[dict[str, Any]]:
    """Parse a DPR topic file (question TAB answer-list literal, CSV quoting, multi-line records)."""
    records = []
    for i, row in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter="\t")):
        if not row:
            continue
        if len(row) != 2:
            raise TopicFormatError(f"{name}: record {i + 1} has {len(row)} columns, expected 2: {row!r:.200}")
        question, answers_literal = row
        try:
            answers = ast.literal_eval(answers_literal)
        except (ValueError, SyntaxError):
            raise TopicFormatError(f"{name}: record {i + 1}: answers are not a list literal: {answers_literal!r:.200}") from None
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise TopicFormatError(f"{name}: record {i + 1}: answers must be a list of strings")
        records.append({"id": f"{id_prefix}-{i}", "question": question.strip(), "golden_answers": answers})
    return records


def read_topics(src: SourceFile, name: str) -> list[dict[str, Any]]:
    member = TOPIC_FILES[name]
    with zipfile.ZipFile(src.path) as jar:
        text = jar.read(member).decode("utf-8")
    return parse_dpr_topics(text, f"{src.path.name}!{member}", name)


def without_questions_of(records: list[dict[str, Any]], others: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` minus those whose normalised question occurs in `others`."""
    taken = {normalize_answer(r["question"]) for r in others}
    return [r for r in records if normalize_answer(r["question"]) not in taken]


def _padded(text: str) -> str:
    return f" {normalize_answer(text)} "


def answer_locations(answers: Iterable[str], corpus_file: Path) -> dict[str, str]:
    """Map each normalised answer that occurs in the corpus to the id of the first passage containing it."""
    automaton = ahocorasick.Automaton()
    for a in answers:
        key = _padded(a)
        if key.strip():
            automaton.add_word(key, key)
    if len(automaton) == 0:
        return {}
    automaton.make_automaton()
    found: dict[str, str] = {}
    for passage in read_passages(corpus_file):
        for _, key in automaton.iter(_padded(f"{passage.title} {passage.text}")):
            found.setdefault(key, passage.id)
    return found


def answerable_subset(records: list[dict[str, Any]], found: dict[str, str]) -> list[dict[str, Any]]:
    subset = []
    for r in records:
        hit = next((found[k] for k in map(_padded, r["golden_answers"]) if k in found), None)
        if hit is not None:
            subset.append({**r, "evidence_id": hit})
    return subset
