"""Reading accuracy: when the solver's search returns a passage holding the answer, does its answer hold it?

This is the link of the chain that study v2 found broken at 135M (19 of 99 NQ questions). The
answer passage of a question is the best-ranked of the retriever's first `depth` hits for the raw
question whose text holds a golden answer (normalised, on word boundaries); questions with none
are left out and counted. The model then sees exactly what the guided solver would see had its
first search been the question and its only result that passage: the solver's prompt,
`<search>question</search>`, the passage inside `<information>`, and an opened `<answer>` tag
(`guided`; so reading is measured apart from searching and from following the tag protocol), or
nothing more (`free`: the model may think first and must close its own `<answer>` tag, as the free
scaffold asks of it). Greedy decoding; EM, cover EM (the answer holds a golden answer: the reading
accuracy) and F1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from searchplay.agent.protocol import last_tag
from searchplay.agent.rollout import chat_prompt_ids, information_text
from searchplay.agent.trajectory import tag_content
from searchplay.eval.evaluate import score
from searchplay.game.prompts import SOLVER_SYSTEM, solver_messages
from searchplay.judge.match import substring_match
from searchplay.llm.base import Engine, SamplingParams
from searchplay.search.base import Hit, Retriever

DOCUMENT_LABEL = re.compile(r"(doc|document)\s*\d+\b", re.IGNORECASE)


@dataclass
class ReadingItem:
    record: dict[str, Any]  # id, question, golden_answers
    passage: Hit  # the best-ranked retrieved passage that holds a golden answer
    rank: int  # its rank among the retriever's hits, from 1


def answer_passages(
    records: list[dict[str, Any]], retriever: Retriever, depth: int = 10, want: int = 0
) -> tuple[list[ReadingItem], int]:
    """The answer passages of the first `want` questions (in order) that have one among the first `depth` hits
    of the raw question (0: of every question), and how many questions before them had none."""
    items: list[ReadingItem] = []
    missing = 0
    for start in range(0, len(records), 64):
        chunk = records[start : start + 64]
        for record, found in zip(chunk, retriever.search([r["question"] for r in chunk], depth)):
            if want and len(items) == want:
                return items, missing
            hit = next(((rank, h) for rank, h in enumerate(found, 1) if substring_match(h.text, record["golden_answers"])), None)
            if hit is None:
                missing += 1
            else:
                items.append(ReadingItem(record, hit[1], hit[0]))
    return items, missing


def reading_prompt(tokenizer: Any, question: str, passage: Hit, guided: bool = True, system: str = SOLVER_SYSTEM) -> list[int]:
    """The solver's context after one search that returned only `passage`; guided: with `<answer>` opened;
    `system`: the solver's instructions (another wording only to compare them)."""
    prompt = chat_prompt_ids(tokenizer, *solver_messages(question, system))
    turn = f"<search>{question}</search>{information_text([passage])}{'<answer>' if guided else ''}"
    return prompt + list(tokenizer.encode(turn, add_special_tokens=False))


def read_answers(
    engine: Engine,
    items: list[ReadingItem],
    max_new_tokens: int = 24,
    batch_size: int = 16,
    guided: bool = True,
    system: str = SOLVER_SYSTEM,
) -> list[dict[str, Any]]:
    """Greedy answers to `items` with their passage in context, scored; one record per item (free: no
    closed `<answer>` tag is no answer)."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=["</answer>"], seed=0)
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        prompts = [reading_prompt(engine.tokenizer, i.record["question"], i.passage, guided, system) for i in chunk]
        for item, g in zip(chunk, engine.generate(prompts, params)):
            answer = tag_content(g.text)[0] if guided else last_tag(g.text + (g.stop_string or ""), "answer")
            em, cover, f1 = score(answer, item.record["golden_answers"])
            out.append(
                {
                    "id": item.record["id"],
                    "question": item.record["question"],
                    "golden_answers": item.record["golden_answers"],
                    "passage_id": item.passage.id,
                    "passage_rank": item.rank,
                    "prediction": answer,
                    "em": em,
                    "cover_em": cover,
                    "f1": f1,
                }
            )
    return out


def is_document_label(answer: str | None) -> bool:
    """An answer that names a search result ("Doc 1", "Document 2") instead of saying what it holds."""
    return answer is not None and DOCUMENT_LABEL.match(answer.strip()) is not None


def reading_summary(records: list[dict[str, Any]], without_passage: int) -> dict[str, float]:
    """Means over the read questions (cover EM is the reading accuracy), the count left out, and the share of
    answers that are a result's label (every one a lost answer)."""
    n = len(records)
    mean = lambda key: sum(r[key] for r in records) / n if n else 0.0  # noqa: E731
    return {
        "questions": n,
        "without_answer_passage": without_passage,
        "em": mean("em"),
        "reading_accuracy": mean("cover_em"),
        "f1": mean("f1"),
        "document_labels": sum(is_document_label(r["prediction"]) for r in records) / n if n else 0.0,
    }
