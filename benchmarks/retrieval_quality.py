"""Retrieval quality: answer recall@1/3/10 and queries/s for every retriever we ship and for Lucene.

Run: .venv/bin/python benchmarks/retrieval_quality.py [--limit N] [--variants]

On the bundled corpus, for each question of nq-answerable and triviaqa-answerable: does a
normalised golden answer occur (on word boundaries, `game.extract.mentions`, the normalisation of
`judge/match.py`) in one of the top 1 / 3 / 10 passages? Every retriever is scored on the same
passage text (the corpus's `contents`: title and text), looked up by id.

Retrievers: our BM25 index (`wiki-bm25`), the bundled MiniLM dense index, their RRF hybrid, and
the reference: Lucene's BM25 as Search-R1 and FlashRAG users run it, Anserini 0.16.2 from the fat
jar inside pyserini 0.19.2 (IndexCollection + SearchCollection -bm25, its defaults k1 0.9, b 0.4),
on Java 17 (Debian: apt-get install openjdk-17-jdk-headless). Without Java that row is skipped with
a message. `--variants` adds the alternatives measured while closing the gap (how BM25 was chosen;
the tantivy rows need `pip install tantivy`, the engine searchplay used before).

Queries/s: all questions of a set, batches of 64, top 10, after one warm-up batch. Lucene's figure
is the wall time of one SearchCollection run over the whole set (2 threads), JVM start included;
the index is built before and not counted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bm25s
import Stemmer
from common import print_table

from searchplay.assets import asset_file
from searchplay.game.extract import mentions
from searchplay.jsonl import read_jsonl, write_jsonl
from searchplay.search.base import Hit
from searchplay.search.bm25 import STOP_WORDS, Bm25Retriever, analyze
from searchplay.search.corpus import read_passages
from searchplay.search.dense import DenseRetriever
from searchplay.search.hybrid import HybridRetriever

SETS = ("nq-answerable", "triviaqa-answerable")
DEPTHS = (1, 3, 10)
ANSERINI_JAR = "pyserini/resources/jars/anserini-0.16.2-fatjar.jar"

Ranking = list[list[str]]  # per question, passage ids best first


def recall(ranking: Ranking, questions: list[dict], contents: dict[str, str]) -> dict[str, str]:
    """Percentage of questions with a golden answer in the top k passages, for each k in DEPTHS."""
    out = {}
    for k in DEPTHS:
        found = sum(any(mentions(contents[i], q["golden_answers"]) for i in ids[:k]) for ids, q in zip(ranking, questions))
        out[f"R@{k}"] = f"{100 * found / len(questions):.1f}"
    return out


def run_retriever(search: Callable[[list[str], int], list[list]], queries: list[str], batch: int = 64) -> tuple[Ranking, float]:
    """(ids per query, queries/s) of a searchplay-style retriever."""
    search(queries[:batch], 10)  # warm-up
    t0 = time.perf_counter()
    ranking = []
    for i in range(0, len(queries), batch):
        ranking += [[h.id for h in hits] for hits in search(queries[i : i + batch], 10)]
    return ranking, len(queries) / (time.perf_counter() - t0)


def anserini_jar() -> Path | None:
    for site in map(Path, sys.path):
        if (site / ANSERINI_JAR).is_file():
            return site / ANSERINI_JAR
    return None


class Lucene:
    """Anserini's BM25 over the same corpus file, through its own command-line tools."""

    def __init__(self, jar: Path, corpus: Path, work: Path):
        self.jar, self.work = jar, work
        (work / "collection").mkdir()
        records = read_jsonl(corpus)
        self.ids = [r["id"] for r in records]  # ours hold spaces, which a TREC run file cannot: number them
        write_jsonl(({"id": str(i), "contents": r["contents"]} for i, r in enumerate(records)),
                    work / "collection" / "passages.jsonl")  # fmt: skip
        self._java("io.anserini.index.IndexCollection", "-collection", "JsonCollection", "-input", work / "collection",
                   "-index", work / "index", "-generator", "DefaultLuceneDocumentGenerator", "-threads", "2",
                   "-storeRaw")  # fmt: skip

    def _java(self, main: str, *args: object) -> None:
        cmd = ["java", "-cp", str(self.jar), main, *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{main} failed: {done.stderr[-2000:]}")

    def run(self, queries: list[str]) -> tuple[Ranking, float]:
        topics, run = self.work / "topics.tsv", self.work / "run.txt"
        topics.write_text("".join(f"{i}\t{' '.join(q.split())}\n" for i, q in enumerate(queries)))
        t0 = time.perf_counter()
        self._java("io.anserini.search.SearchCollection", "-index", self.work / "index", "-topics", topics,
                   "-topicreader", "TsvInt", "-output", run, "-bm25", "-hits", "10", "-threads", "2")  # fmt: skip
        seconds = time.perf_counter() - t0
        ranking: Ranking = [[] for _ in queries]
        for line in run.read_text().splitlines():  # TREC run: qid Q0 docid rank score tag
            qid, _, docid, *_ = line.split()
            ranking[int(qid)].append(self.ids[int(docid)])
        return ranking, len(queries) / seconds


def tantivy_search(corpus: Path, work: Path, two_fields: bool) -> Callable[[list[str], int], list[list]]:
    """The BM25 searchplay used before (tantivy, k1 1.2 and b 0.75 fixed): title and body as two fields, or one text."""
    import tantivy  # only for --variants: the engine this benchmark replaced (pip install tantivy)

    fields = ["title", "body"] if two_fields else ["contents"]
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    for f in fields:
        sb.add_text_field(f, tokenizer_name="en")
    index = tantivy.Index(sb.build(), path=str(work))
    analyzer = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
    analyzer = analyzer.filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stopword("english"))
    index.register_tokenizer("en", analyzer.filter(tantivy.Filter.stemmer("english")).build())
    writer = index.writer(heap_size=200_000_000, num_threads=1)
    for p in read_passages(corpus):
        text = {"title": p.title, "body": p.text} if two_fields else {"contents": f"{p.title} {p.text}"}
        writer.add_document(tantivy.Document(id=p.id, **text))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()

    def search(queries: list[str], k: int) -> list[list]:
        out = []
        for q in queries:
            words = re.sub(r"[^\w]+", " ", q.lower()).strip()
            try:
                hits = searcher.search(index.parse_query(words, fields), k).hits if words else []
            except ValueError:  # stop words only
                hits = []
            out.append([Hit(searcher.doc(a)["id"][0], "", "", s) for s, a in hits])
        return out

    return search


def bm25s_search(corpus: Path, k1: float, b: float) -> Callable[[list[str], int], list[list]]:
    """Our analysis and Lucene's idf with other k1 / b: what tantivy's fixed constants cost."""
    passages = list(read_passages(corpus))
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(bm25s.tokenize([f"{p.title} {p.text}" for p in passages], stopwords=STOP_WORDS, show_progress=False,
                               stemmer=Stemmer.Stemmer("english")), show_progress=False)  # fmt: skip

    def search(queries: list[str], k: int) -> list[list]:
        docs, _ = model.retrieve(analyze(queries), k=k, show_progress=False)
        return [[Hit(passages[j].id, "", "", 0.0) for j in row] for row in docs]

    return search


def variants(corpus: Path, work: Path) -> dict[str, Callable[[list[str], int], list[list]]]:
    """The alternatives measured while closing the gap to Lucene (benchmarks/README.md)."""
    (work / "t2").mkdir()
    (work / "t1").mkdir()
    return {
        "before: tantivy, title + body fields": tantivy_search(corpus, work / "t2", two_fields=True),
        "tantivy, one text (title + body)": tantivy_search(corpus, work / "t1", two_fields=False),
        "bm25s, one text, k1 1.2 b 0.75 (tantivy's)": bm25s_search(corpus, 1.2, 0.75),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="first N questions of each set (0 = all)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense and hybrid rows")
    ap.add_argument("--variants", action="store_true", help="also the BM25 alternatives measured to close the gap")
    args = ap.parse_args()
    corpus = asset_file("wiki")
    contents = {r["id"]: r["contents"] for r in read_jsonl(corpus)}
    sets = {name: read_jsonl(asset_file(name)) for name in SETS}
    if args.limit:
        sets = {name: qs[: args.limit] for name, qs in sets.items()}
    bm25 = Bm25Retriever(asset_file("wiki-bm25"))
    retrievers: dict[str, Callable[[list[str], int], list[list]]] = {"searchplay BM25 (bm25s; wiki-bm25)": bm25.search}
    with tempfile.TemporaryDirectory() as tmp:
        if args.variants:
            retrievers.update(variants(corpus, Path(tmp)))
        if not args.no_dense:
            dense = DenseRetriever(asset_file("wiki-minilm"))
            retrievers["dense MiniLM (wiki-minilm)"] = dense.search
            retrievers["hybrid RRF (BM25 + MiniLM)"] = HybridRetriever([bm25, dense]).search
        jar = anserini_jar()
        lucene = None
        if shutil.which("java") is None or jar is None:
            print("Lucene row skipped: needs java (apt-get install openjdk-17-jdk-headless) and pyserini 0.19.2's jar",
                  file=sys.stderr)  # fmt: skip
        else:
            (Path(tmp) / "lucene").mkdir()
            lucene = Lucene(jar, corpus, Path(tmp) / "lucene")
        rows = []
        for name, questions in sets.items():
            queries = [q["question"] for q in questions]
            runs = {label: run_retriever(search, queries) for label, search in retrievers.items()}
            if lucene is not None:
                runs["Lucene BM25 (Anserini 0.16.2, k1 0.9 b 0.4)"] = lucene.run(queries)
            for label, (ranking, qps) in runs.items():
                rows.append({"dataset": f"{name} (n={len(questions)})", "retriever": label,
                             **recall(ranking, questions, contents), "queries/s": qps})  # fmt: skip
            print(json.dumps(rows[-len(runs) :]), file=sys.stderr)
    print_table("Answer recall (% of questions with a golden answer in the top k) and speed, bundled corpus", rows)


if __name__ == "__main__":
    main()
