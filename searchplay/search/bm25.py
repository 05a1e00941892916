"""BM25 retrieval ranked as Lucene ranks it (bm25s), many times faster than Lucene.

Analysis follows Lucene's EnglishAnalyzer: lower-cased words (two characters or more), Lucene's
33 English stop words removed, Snowball English stemming (PyStemmer). A passage is indexed as one
text, its title then its body, as Anserini indexes Search-R1's `contents`; scores are BM25 with
Lucene's idf and Anserini's defaults k1 = 0.9, b = 0.4. On the bundled corpus this ranks like
Anserini's BM25 (answer recall@3 equal on NQ and TriviaQA; benchmarks/retrieval_quality.py),
while two fields (title, body) scored apart and tantivy's fixed k1 1.2 / b 0.75 cost 1-4 points.

bm25s precomputes the score of every (term, passage) pair into a sparse matrix; a batch of
queries is then one sparse product with a vector of query-term counts per query (a repeated
word counts twice, as in Anserini's bag-of-words queries) and a top-k per row. Queries are
reduced to words, so no query syntax exists that could fail or change a query's meaning.

Index directory: `searchplay-index.json` (kind, corpus path/size/sha256, parameters, counts),
`bm25s/` (bm25s's parameters, vocabulary and score matrix), `passages.jsonl` + `offsets.npy`
(the passages in wiki-18 format, read back by byte offset for the hits only). Opening the index
for a corpus other than the one it was built from fails with both checksums named.
"""

from __future__ import annotations

import json
import shutil
import time
from array import array
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import orjson
import scipy.sparse as sp
import Stemmer

from searchplay.outdir import check_output_dir, replace_dir
from searchplay.progress import progress as progress_counter
from searchplay.search.base import Hit, SearchError
from searchplay.search.corpus import CorpusStats, passages_at, read_passages
from searchplay.sources import sha256_file

META_FILE = "searchplay-index.json"
BUILDING_MARKER = "searchplay-building"  # in an index directory still being written
PASSAGES, OFFSETS, MODEL_DIR = "passages.jsonl", "offsets.npy", "bm25s"
K1, B = 0.9, 0.4  # Anserini's BM25 defaults
# Lucene's EnglishAnalyzer stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET).
# fmt: off
STOP_WORDS = ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
              "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
              "will", "with"]
# fmt: on


class IndexMismatchError(SearchError):
    """An index opened against a corpus it was not built from."""


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


def check_same_corpus(*index_dirs: Path) -> None:
    """Refuse indexes used together (hybrid fusion) that were built from different corpora: their passage ids
    would not name the same passages, and results would alternate between the two corpora."""
    metas = [(Path(d), read_index_meta(d)) for d in index_dirs]
    first_dir, first = metas[0]
    for other_dir, other in metas[1:]:
        if other["corpus_sha256"] != first["corpus_sha256"]:
            raise IndexMismatchError(
                f"indexes built from different corpora cannot be used together: {first_dir} ({first['kind']}, from "
                f"{first['corpus_path']}, sha256 {first['corpus_sha256'][:12]}…) and {other_dir} ({other['kind']}, "
                f"from {other['corpus_path']}, sha256 {other['corpus_sha256'][:12]}…); build both from one corpus"
            )


def analyze(texts: list[str]) -> list[list[str]]:
    """Terms of each text, as both the index and the queries see them."""
    return bm25s.tokenize(texts, stopwords=STOP_WORDS, stemmer=_stemmer(), return_ids=False, show_progress=False)


def _stemmer() -> Any:
    return Stemmer.Stemmer("english")


def build_bm25_index(corpus: Path, out_dir: Path, progress: bool = True, skip_bad_lines: bool = False) -> dict[str, Any]:
    """Index a corpus file into `out_dir` (replaced if present); returns the index metadata."""
    corpus, out_dir = Path(corpus), Path(out_dir)
    check_output_dir(out_dir, (META_FILE,), "index")
    tmp = out_dir.with_name(out_dir.name + ".building")
    check_output_dir(tmp, (BUILDING_MARKER,), "index build")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: an earlier build that was interrupted
    tmp.mkdir(parents=True)
    (tmp / BUILDING_MARKER).write_text("")
    stats = CorpusStats()
    t0 = time.perf_counter()
    # One streamed pass: each passage is copied into the index (its byte offset noted, to read hits
    # back) and analysed; term ids are kept at 4 bytes each, so a million passages stay within a few
    # hundred MiB before bm25s builds its score matrix.
    tokenizer = bm25s.tokenization.Tokenizer(stopwords=STOP_WORDS, stemmer=_stemmer())
    offsets: list[int] = []
    with open(tmp / PASSAGES, "wb") as copy, progress_counter(progress, f"indexing {corpus.name}") as tick:

        def texts() -> Iterator[str]:
            for p in read_passages(corpus, skip_bad_lines, stats):
                offsets.append(copy.tell())
                copy.write(orjson.dumps(p.to_search_r1()) + b"\n")
                tick(1)
                yield f"{p.title} {p.text}"

        ids = [array("i", doc) for doc in tokenizer.streaming_tokenize(texts())]
    if not offsets:
        raise SearchError(f"corpus {corpus} holds no passages")
    np.save(tmp / OFFSETS, np.asarray(offsets, dtype=np.int64))
    model = bm25s.BM25(k1=K1, b=B, method="lucene", csc_backend="scipy")
    model.index((ids, tokenizer.get_vocab_dict()), show_progress=progress)
    del ids
    model.save(str(tmp / MODEL_DIR), show_progress=False)
    meta = {
        "kind": "bm25",
        "corpus_path": str(corpus.resolve()),
        "corpus_bytes": corpus.stat().st_size,
        "corpus_sha256": corpus_checksum(corpus),
        "passages": len(offsets),
        "skipped_lines": stats.skipped,
        "bm25s_version": metadata.version("bm25s"),
        "k1": K1,
        "b": B,
        "idf": "lucene",
        "analyzer": "words of 2+ characters, lower-cased, Lucene English stop words, Snowball English stemmer",
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    (tmp / BUILDING_MARKER).unlink()
    replace_dir(tmp, out_dir)
    return meta


class Bm25Retriever:
    """In-process BM25 search over an index directory written by `build_bm25_index`."""

    def __init__(self, index_dir: str | Path, corpus: str | Path | None = None):
        self.index_dir = Path(index_dir)
        self.meta = read_index_meta(self.index_dir, "bm25")
        if "bm25s_version" not in self.meta:
            raise SearchError(f"{index_dir} is a BM25 index of an older searchplay (tantivy); rebuild it with: "
                              "searchplay index build (or searchplay assets build for the bundled one)")  # fmt: skip
        if corpus is not None:
            check_corpus(self.index_dir, Path(corpus))
        model = bm25s.BM25.load(str(self.index_dir / MODEL_DIR), show_progress=False)
        s = model.scores
        # bm25s stores (passage x term) scores column by column; its transpose is (term x passage) by rows.
        self._scores = sp.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1)).T
        self._vocab: dict[str, int] = model.vocab_dict
        self._offsets = np.load(self.index_dir / OFFSETS)

    def __len__(self) -> int:
        return int(self._scores.shape[1])

    def _query_matrix(self, queries: list[str]) -> sp.csr_matrix:
        """One row per query: how often each known term occurs in it."""
        rows, cols = [], []
        for r, terms in enumerate(analyze(queries)):
            for t in terms:
                if (j := self._vocab.get(t)) is not None:
                    rows.append(r)
                    cols.append(j)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(queries), self._scores.shape[0]))  # duplicates summed

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        scores = (self._query_matrix(queries) @ self._scores).tocsr()  # only passages sharing a term are stored
        ranked: list[list[tuple[float, int]]] = []
        for r in range(len(queries)):
            lo, hi = scores.indptr[r], scores.indptr[r + 1]
            values, docs = scores.data[lo:hi], scores.indices[lo:hi]
            if len(values) > k:  # keep the k best (and any tied with the k-th) before sorting
                keep = values >= np.partition(values, len(values) - k)[len(values) - k]
                values, docs = values[keep], docs[keep]
            top = np.lexsort((docs, -values))[:k]  # best first; ties to the earlier passage, as Lucene breaks them
            ranked.append([(float(values[i]), int(docs[i])) for i in top])
        out = []
        with open(self.index_dir / PASSAGES, "rb") as handle:
            for row in ranked:
                passages = passages_at(handle, self._offsets[[d for _, d in row]])
                out.append([Hit(p.id, p.title, p.text, score) for (score, _), p in zip(row, passages)])
        return out
