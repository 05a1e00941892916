"""Build `wiki-seeds`: proposer seeds `{"answer", "hops"}` from the corpus's article titles.

Titles are entities by construction (each passage belongs to a Wikipedia article). A trailing
disambiguation such as "Mercury (planet)" is removed from the answer, since a question writer
would never be asked to produce the parenthesis. Hops are uniform in [hops_min, hops_max]; the
draw is seeded, so the same corpus and settings give the same seeds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from searchplay.search.corpus import read_passages

_DISAMBIGUATION = re.compile(r"\s*\([^)]*\)\s*$")


def entity_titles(corpus_file: Path) -> dict[str, str]:
    """Answer text -> id of the article's first passage, in corpus order."""
    titles: dict[str, str] = {}
    for p in read_passages(corpus_file):
        answer = _DISAMBIGUATION.sub("", p.title).strip()
        if answer and answer not in titles:
            titles[answer] = p.id
    return titles


def draw_seeds(titles: dict[str, str], count: int, hops_min: int, hops_max: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    answers = sorted(titles)
    chosen = rng.sample(answers, min(count, len(answers)))
    return [{"answer": a, "hops": rng.randint(hops_min, hops_max), "doc_id": titles[a]} for a in chosen]
