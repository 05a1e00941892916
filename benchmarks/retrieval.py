"""Retrieval benchmark: BM25 build and query speed (vs rank_bm25), server latency, dense speed.

Run: .venv/bin/python benchmarks/retrieval.py [--synthetic 1000000] [--rank-bm25-subset 20000]
Needs the built assets (make setup) and, for the comparison, `pip install rank-bm25`.
Queries are the real NQ test questions. Prints markdown tables (copied to benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mib, print_table, run_child, timed

from searchplay.assets import asset_file
from searchplay.jsonl import read_jsonl
from searchplay.search.bm25 import Bm25Retriever, analyze, build_bm25_index
from searchplay.search.client import HttpRetriever
from searchplay.search.corpus import read_passages
from searchplay.search.dense import DenseRetriever, build_dense_index
from searchplay.web import free_port

ENGINE = "searchplay BM25 (bm25s)"


def queries_per_second(retriever, queries: list[str], k: int = 5, batch: int = 64) -> float:
    _, seconds = timed(lambda: [retriever.search(queries[i : i + batch], k) for i in range(0, len(queries), batch)])
    return len(queries) / seconds


def synthetic_corpus(path: Path, n: int, vocab: list[str], words: int = 100, seed: int = 0) -> None:
    """n passages of `words` words drawn Zipf-like from a real vocabulary, wiki-18 format."""

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    vocab_arr = np.array(vocab, dtype=object)
    with open(path, "w") as f:
        for lo in range(0, n, 10_000):
            m = min(10_000, n - lo)
            ids = rng.choice(len(vocab), size=(m, words + 2), p=weights)
            for j in range(m):
                w = vocab_arr[ids[j]]
                f.write(json.dumps({"id": str(lo + j), "contents": f'"{w[0]} {w[1]}"\n' + " ".join(w[2:])}) + "\n")


def bm25_section(args: argparse.Namespace, queries: list[str]) -> list[dict]:
    rows = []
    corpus = asset_file("wiki")
    with tempfile.TemporaryDirectory() as tmp:
        meta, build_s = timed(lambda: build_bm25_index(corpus, Path(tmp) / "idx", progress=False))
        r = Bm25Retriever(Path(tmp) / "idx")
        rows.append(
            {
                "corpus": f"bundled ({meta['passages']:,})",
                "engine": ENGINE,
                "build_s": build_s,
                "queries/s": queries_per_second(r, queries),
                "peak_rss_MiB": "-",
            }
        )
        vocab = sorted({w for p in read_passages(corpus) for w in p.text.lower().split() if w.isalpha()})
        random.Random(0).shuffle(vocab)
        syn = Path(tmp) / "synthetic.jsonl"
        _, gen_s = timed(lambda: synthetic_corpus(syn, args.synthetic, vocab))
        print(
            f"synthetic corpus: {args.synthetic:,} passages, {syn.stat().st_size / 2**20:,.0f} MiB, generated in {gen_s:.0f} s",
            file=sys.stderr,
        )
        code = (
            "import json,time;from pathlib import Path;from searchplay.search.bm25 import build_bm25_index;"
            f"t=time.perf_counter();build_bm25_index(Path({str(syn)!r}),Path({tmp!r})/'syn-idx',progress=False);"
            "print(time.perf_counter()-t)"
        )
        out, rss = run_child(code)
        r = Bm25Retriever(Path(tmp) / "syn-idx")
        rows.append(
            {
                "corpus": f"synthetic ({args.synthetic:,})",
                "engine": ENGINE,
                "build_s": float(out),
                "queries/s": queries_per_second(r, queries),
                "peak_rss_MiB": rss,
            }
        )
        try:
            from rank_bm25 import BM25Okapi
        except ImportError:
            print("rank_bm25 not installed (pip install rank-bm25): comparison skipped", file=sys.stderr)
            return rows
        subset = Path(tmp) / "subset.jsonl"
        with open(syn) as src, open(subset, "w") as dst:
            for _, line in zip(range(args.rank_bm25_subset), src):
                dst.write(line)
        build_bm25_index(subset, Path(tmp) / "sub-idx", progress=False)
        sub_ours = queries_per_second(Bm25Retriever(Path(tmp) / "sub-idx"), queries)
        docs = analyze([p.title + " " + p.text for p in read_passages(subset)])  # the same terms for both
        bm, build_s = timed(lambda: BM25Okapi(docs))
        few = queries[:50]
        _, s = timed(lambda: [bm.get_top_n(terms, docs, n=5) for terms in analyze(few)])
        rank_qps = len(few) / s
        sub = f"synthetic subset ({args.rank_bm25_subset:,})"
        rows.append({"corpus": sub, "engine": ENGINE, "build_s": "-", "queries/s": sub_ours, "peak_rss_MiB": "-"})
        rows.append({"corpus": sub, "engine": "rank_bm25", "build_s": build_s, "queries/s": rank_qps, "peak_rss_MiB": "-"})
        rows.append(
            {
                "corpus": sub,
                "engine": f"ratio {ENGINE}/rank_bm25",
                "build_s": "-",
                "queries/s": sub_ours / rank_qps,
                "peak_rss_MiB": "-",
            }
        )
    return rows


@contextmanager
def retrieval_server() -> Iterator[str]:
    """`searchplay serve-retriever` on the bundled BM25 index in its own process, as users run it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "searchplay", "serve-retriever", "--port", str(port)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/health").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def server_section(queries: list[str], clients: int = 16, per_client: int = 100, batch: int = 64) -> list[dict]:
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    with retrieval_server() as url:
        # Batched, as the trainer sends them: the same batches through our HTTP client and in process,
        # alternately, five times; the median ratio.
        batches = [queries[i : i + batch] for i in range(0, len(queries), batch)]
        client = HttpRetriever(url)
        client.search(batches[0], 3)
        retriever.search(batches[0], 3)
        runs = []
        for _ in range(5):
            _, http_s = timed(lambda: [client.search(b, 3) for b in batches])
            _, local_s = timed(lambda: [retriever.search(b, 3) for b in batches])
            runs.append((local_s / http_s, http_s, local_s))
        ratio, http_s, local_s = sorted(runs)[len(runs) // 2]
        latencies = []
        with httpx.Client() as c:
            for q in queries[:500]:
                t0 = time.perf_counter()
                c.post(f"{url}/retrieve", json={"queries": [q], "topk": 3, "return_scores": True}).raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)
        errors, done = [0], [0]

        def one_client(i: int) -> None:
            with httpx.Client() as c:
                for j in range(per_client):
                    q = queries[(i * per_client + j) % len(queries)]
                    r = c.post(f"{url}/retrieve", json={"queries": [q], "topk": 3})
                    done[0] += 1
                    errors[0] += r.status_code != 200

        threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    latencies.sort()
    return [
        {
            "measure": f"batched: server queries/s (HttpRetriever, batches of {batch}, top-3)",
            "value": len(queries) / http_s,
        },
        {"measure": "batched: queries/s of the same retriever in process", "value": len(queries) / local_s},
        {"measure": "batched: ratio server / in process (median of 5)", "value": ratio},
        {"measure": "single-query latency p50 (ms)", "value": statistics.median(latencies)},
        {"measure": "single-query latency p99 (ms)", "value": latencies[int(0.99 * len(latencies)) - 1]},
        {"measure": f"throughput, {clients} concurrent clients (requests/s)", "value": done[0] / seconds},
        {"measure": f"errors out of {done[0]} requests", "value": errors[0]},
    ]


def dense_section(queries: list[str], encode_n: int = 500) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset.jsonl"
        with open(asset_file("wiki")) as src, open(subset, "w") as dst:
            for _, line in zip(range(encode_n), src):
                dst.write(line)
        meta = build_dense_index(subset, Path(tmp) / "d", progress=False)
    r = DenseRetriever(asset_file("wiki-minilm"))
    qps = queries_per_second(r, queries[:512])
    return [
        {"measure": "passages encoded/s (all-MiniLM-L6-v2, ~110-word passages)", "value": encode_n / meta["encode_seconds"]},
        {"measure": f"queries/s, exact search over {len(r):,} passages (batches of 64, top-5)", "value": qps},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="passages in the synthetic corpus")
    ap.add_argument("--rank-bm25-subset", type=int, default=20_000, help="passages rank_bm25 is measured on")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--sections", default="bm25,server,dense", help="comma-separated: bm25, server, dense")
    args = ap.parse_args()
    sections = args.sections.split(",")
    queries = [r["question"] for r in read_jsonl(asset_file("nq-test"))]
    if "bm25" in sections:
        print_table("BM25 (batches of 64 NQ questions, top-5)", bm25_section(args, queries))
    if "server" in sections:
        title = "Retrieval server on loopback (bundled BM25, `searchplay serve-retriever` in its own process)"
        print_table(title, server_section(queries))
    if "dense" in sections and not args.skip_dense:
        print_table("Dense retrieval (bundled MiniLM index)", dense_section(queries))
    print(f"\npeak RSS of this process: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
