"""Build `wiki-seeds`: proposer seeds `{"answer", "hops"}` from the corpus's article titles.

Titles are entities by construction (each passage belongs to a Wikipedia article). A trailing
disambiguation such as "Mercury (planet)" is removed from the answer, since a question writer
would never be asked to produce the parenthesis. With `assets.seed_filter = "common_nouns"` one-word
titles that their article writes in lower case (Pier, Joint, Saw, Roof: a quarter of the bundled
draw) are left out: no short question pins one of them down. Hops are uniform in [hops_min, hops_max]; the
draw is seeded, so the same corpus and settings give the same seeds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from searchplay.search.corpus import read_passages

_DISAMBIGUATION = re.compile(r"\s*\([^)]*\)\s*$")


def common_noun(title: str, text: str) -> bool:
    """A one-word title that its own article writes in lower case ("A pier is ... piers"): a thing, not a
    name. A one-search question cannot pin it down (which pier?), so it makes a poor answer to propose
    for. Names stay: several words ("Arctic Circle"), or one word never written in lower case ("Vietnam")."""
    if len(title.split()) != 1 or not title.isalpha():
        return False
    return re.search(rf"\b{re.escape(title.lower())}s?\b", text) is not None


def entity_titles(corpus_file: Path, drop_common_nouns: bool = False) -> tuple[dict[str, str], int]:
    """(answer text -> id of the article's first passage, in corpus order; titles dropped as common nouns)."""
    titles: dict[str, str] = {}
    dropped: set[str] = set()
    for p in read_passages(corpus_file):
        answer = _DISAMBIGUATION.sub("", p.title).strip()
        if not answer or answer in titles or answer in dropped:
            continue
        if drop_common_nouns and common_noun(answer, p.text):
            dropped.add(answer)
        else:
            titles[answer] = p.id
    return titles, len(dropped)


def draw_seeds(titles: dict[str, str], count: int, hops_min: int, hops_max: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    answers = sorted(titles)
    chosen = rng.sample(answers, min(count, len(answers)))
    return [{"answer": a, "hops": rng.randint(hops_min, hops_max), "doc_id": titles[a]} for a in chosen]
