"""BM25 retrieval with tantivy.

Schema: stored `id`, and `title` and `body` fields analysed like Lucene's English analyzer
(lower-case, English stop words removed, Snowball stemming); a query searches both fields, so
an entity named in the title counts as well as its mention in the text. User queries are
reduced to words before parsing, so that quotes, colons or AND/OR in a model's query can
never raise a syntax error or change the query's meaning.

The index directory holds `searchplay-index.json`: kind, corpus path, passage count, corpus
sha256, tantivy version. Opening the index for a corpus other than the one it was built from
fails with both checksums named.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import tantivy

from searchplay.outdir import check_output_dir, replace_dir
from searchplay.progress import progress as progress_counter
from searchplay.search.base import Hit, SearchError
from searchplay.search.corpus import CorpusStats, read_passages
from searchplay.sources import sha256_file

META_FILE = "searchplay-index.json"
BUILDING_MARKER = "searchplay-building"  # in an index directory still being written
ANALYZER = "en_stop_stem"
_NON_WORD = re.compile(r"[^\w]+")


class IndexMismatchError(SearchError):
    """An index opened against a corpus it was not built from."""


def _analyzer() -> Any:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema() -> Any:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("title", stored=True, tokenizer_name=ANALYZER)
    sb.add_text_field("body", stored=True, tokenizer_name=ANALYZER)
    return sb.build()


def corpus_checksum(path: Path) -> str:
    return sha256_file(path)


def read_index_meta(index_dir: Path, kind: str | None = None) -> dict[str, Any]:
    """The index's metadata; with `kind`, refuse an index of another kind."""
    path = Path(index_dir) / META_FILE
    if not path.is_file():
        raise SearchError(f"{index_dir} is not a searchplay index (no {META_FILE}); build one with: searchplay index build")
    meta = json.loads(path.read_text())
    if kind is not None and meta.get("kind") != kind:
        raise SearchError(f"{index_dir} is a {meta.get('kind')} index, not {kind}")
    return meta


def check_corpus(index_dir: Path, corpus: Path) -> None:
    """Refuse an index built from another corpus (size first, then sha256)."""
    meta = read_index_meta(index_dir)
    corpus = Path(corpus)
    if corpus.stat().st_size != meta["corpus_bytes"] or corpus_checksum(corpus) != meta["corpus_sha256"]:
        raise IndexMismatchError(
            f"index {index_dir} was built from {meta['corpus_path']} (sha256 {meta['corpus_sha256'][:12]}…), "
            f"not from {corpus} (sha256 {corpus_checksum(corpus)[:12]}…); rebuild it with: "
            f"searchplay index build --corpus {corpus} --kind {meta['kind']} --out DIR"
        )


def build_bm25_index(
    corpus: Path,
    out_dir: Path,
    progress: bool = True,
    skip_bad_lines: bool = False,
    heap_bytes: int = 512_000_000,
    threads: int = 2,
) -> dict[str, Any]:
    """Index a corpus file into `out_dir` (replaced if present); returns the index metadata."""
    corpus, out_dir = Path(corpus), Path(out_dir)
    check_output_dir(out_dir, (META_FILE,), "index")
    tmp = out_dir.with_name(out_dir.name + ".building")
    check_output_dir(tmp, (BUILDING_MARKER,), "index build")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: an earlier build that was interrupted
    tmp.mkdir(parents=True)
    (tmp / BUILDING_MARKER).write_text("")
    index = tantivy.Index(_schema(), path=str(tmp))
    index.register_tokenizer(ANALYZER, _analyzer())
    writer = index.writer(heap_size=heap_bytes, num_threads=threads)
    stats = CorpusStats()
    t0 = time.perf_counter()
    with progress_counter(progress, f"indexing {corpus.name}") as tick:
        for p in read_passages(corpus, skip_bad_lines=skip_bad_lines, stats=stats):
            writer.add_document(tantivy.Document(id=p.id, title=p.title, body=p.text))
            tick(1)
    writer.commit()
    writer.wait_merging_threads()
    meta = {
        "kind": "bm25",
        "corpus_path": str(corpus.resolve()),
        "corpus_bytes": corpus.stat().st_size,
        "corpus_sha256": corpus_checksum(corpus),
        "passages": stats.passages,
        "skipped_lines": stats.skipped,
        "tantivy_version": metadata.version("tantivy"),
        "analyzer": "simple+lowercase+stop(english)+stem(english)",
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    (tmp / BUILDING_MARKER).unlink()
    replace_dir(tmp, out_dir)
    return meta


def clean_query(query: str) -> str:
    """Words only, lower-cased: no query syntax survives (see module docstring)."""
    return _NON_WORD.sub(" ", query.lower()).strip()


class Bm25Retriever:
    """In-process BM25 search over a tantivy index directory."""

    def __init__(self, index_dir: str | Path, corpus: str | Path | None = None):
        self.index_dir = Path(index_dir)
        self.meta = read_index_meta(self.index_dir, "bm25")
        if corpus is not None:
            check_corpus(self.index_dir, Path(corpus))
        self._index = tantivy.Index.open(str(self.index_dir))
        self._index.register_tokenizer(ANALYZER, _analyzer())
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def search_one(self, query: str, k: int) -> list[Hit]:
        words = clean_query(query)
        if not words:
            return []
        try:
            parsed = self._index.parse_query(words, ["title", "body"])
        except ValueError:  # every word was a stop word: nothing to search for
            return []
        hits = []
        for score, address in self._searcher.search(parsed, k).hits:
            doc = self._searcher.doc(address)
            hits.append(Hit(doc["id"][0], doc["title"][0], doc["body"][0], float(score)))
        return hits

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [self.search_one(q, k) for q in queries]
