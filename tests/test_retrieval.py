"""BM25 index, the HTTP server and client, the cache, hybrid fusion — real bm25s index, real uvicorn."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchplay.assets.names import corpus_path, index_path
from searchplay.config import Config, ServerConfig
from searchplay.outdir import OutputDirError
from searchplay.search.base import Hit, SearchError, render_hits
from searchplay.search.bm25 import META_FILE, Bm25Retriever, IndexMismatchError, build_bm25_index
from searchplay.search.cache import CachedRetriever
from searchplay.search.client import HttpRetriever
from searchplay.search.hybrid import reciprocal_rank_fusion
from searchplay.search.server import create_app
from tests.servers import free_port, running_server


@pytest.fixture(scope="module")
def bm25(cfg: Config) -> Bm25Retriever:
    return Bm25Retriever(index_path("bundled", "bm25", cfg), corpus=corpus_path("bundled", cfg))


def test_bundled_index_covers_corpus_and_records_provenance(cfg: Config, bm25: Bm25Retriever) -> None:
    corpus = corpus_path("bundled", cfg)
    n = sum(1 for _ in corpus.open())
    assert len(bm25) == n == bm25.meta["passages"]
    assert bm25.meta["corpus_path"] == str(corpus.resolve()) and len(bm25.meta["corpus_sha256"]) == 64
    assert bm25.meta["bm25s_version"] and (bm25.meta["k1"], bm25.meta["b"]) == (0.9, 0.4)


def test_bm25_finds_entities_and_is_robust_to_query_syntax(bm25: Bm25Retriever) -> None:
    assert bm25.search(["Eiffel Tower"], 1)[0][0].id == "sum:Eiffel Tower"
    assert all("paris" in (h.title + h.text).lower() for h in bm25.search(["Paris"], 5)[0])
    assert bm25.search(["Who wrote Hamlet?"], 1)[0][0].id == "sum:Hamlet"
    top = [h.title for h in bm25.search(["capital city of France Paris"], 3)[0]]
    assert "Paris" in top
    weird = bm25.search(['title:"Paris AND (', "", "???", "the of and", "- not -"], 3)
    assert weird[1] == weird[2] == weird[3] == [] and len(weird[0]) == 3  # stop words only: no hits, no error
    assert isinstance(weird[4], list)


def test_index_build_and_corpus_mismatch_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": str(i), "title": f"T{i}", "text": f"apple banana {i}"}) + "\n" for i in range(50))
    )
    meta = build_bm25_index(corpus, tmp_path / "idx", progress=False)
    assert meta["passages"] == 50 and (tmp_path / "idx" / META_FILE).is_file()
    assert len(Bm25Retriever(tmp_path / "idx", corpus=corpus)) == 50
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text().replace("banana", "cherry"))
    with pytest.raises(IndexMismatchError, match=r"was built from .*c\.jsonl.*not from .*other\.jsonl"):
        Bm25Retriever(tmp_path / "idx", corpus=other)
    with pytest.raises(SearchError, match="not a searchplay index"):
        Bm25Retriever(tmp_path)


def test_index_build_never_destroys_what_it_did_not_write(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "title": f"T{i}", "text": f"apple {i}"}) + "\n" for i in range(20)))
    notes = tmp_path / "work"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    for target in (notes, tmp_path):  # a user's folder, and the folder holding the corpus itself
        with pytest.raises(OutputDirError, match="holds no index written by searchplay"):
            build_bm25_index(corpus, target, progress=False)
    assert (notes / "notes.txt").read_text() == "mine" and corpus.is_file()
    with pytest.raises(OutputDirError, match="not a directory"):
        build_bm25_index(corpus, corpus, progress=False)
    build_bm25_index(corpus, tmp_path / "idx", progress=False)
    corpus.write_text(corpus.read_text() + json.dumps({"id": "new", "title": "N", "text": "pear"}) + "\n")
    assert build_bm25_index(corpus, tmp_path / "idx", progress=False)["passages"] == 21  # ours: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "idx", "work"]  # nothing left beside it
    result = subprocess.run(
        [sys.executable, "-m", "searchplay", "index", "build", "--corpus", str(corpus), "--out", str(notes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "holds no index written by searchplay" in result.stderr
    assert (notes / "notes.txt").read_text() == "mine"


def test_render_hits() -> None:
    hits = [Hit("1", "Paris", "Capital of France.", 2.0), Hit("2", "Lyon", "A city.", 1.0)]
    assert render_hits(hits) == "Doc 1 (Title: Paris) Capital of France.\nDoc 2 (Title: Lyon) A city."


class CountingRetriever:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls.append(list(queries))
        return [[Hit(q, q, "t", float(k))] for q in queries]


def test_cache_counts_hits_and_sends_only_misses() -> None:
    inner = CountingRetriever()
    cache = CachedRetriever(inner, size=2)
    assert cache.search(["a", "b"], 3)[1][0].id == "b"
    out = cache.search(["a", "c"], 3)
    assert [r[0].id for r in out] == ["a", "c"]
    assert inner.calls == [["a", "b"], ["c"]]
    assert cache.stats() == {"cache_hits": 1, "cache_misses": 3, "cache_entries": 2}
    cache.search(["b"], 3)  # "b" was evicted (LRU, size 2)
    assert inner.calls[-1] == ["b"]
    cache.search(["a"], 5)  # k is part of the key
    assert inner.calls[-1] == ["a"]


def test_reciprocal_rank_fusion_hand_computed() -> None:
    a = [Hit("x", "X", "", 9), Hit("y", "Y", "", 8)]
    b = [Hit("y", "Y", "", 0.9), Hit("z", "Z", "", 0.8)]
    fused = reciprocal_rank_fusion([a, b], k=3, rrf_k=60)
    assert [h.id for h in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)


@pytest.fixture(scope="module")
def server_url(bm25: Bm25Retriever):
    limits = ServerConfig(max_queries=8, max_query_chars=200, max_topk=10)
    with running_server(create_app(bm25, limits, {"kind": "bm25"})) as url:
        yield url


def test_search_r1_schema_round_trip(server_url: str, bm25: Bm25Retriever) -> None:
    r = httpx.post(f"{server_url}/retrieve", json={"queries": ["Hamlet", "Paris"], "topk": 3, "return_scores": True})
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == 2 and all(len(x) == 3 for x in result)
    first = result[0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"]["contents"].startswith('"Hamlet"\n')
    local = bm25.search(["Hamlet"], 3)[0]
    assert [d["document"]["id"] for d in result[0]] == [h.id for h in local]
    no_scores = httpx.post(f"{server_url}/retrieve", json={"queries": ["Paris"], "topk": 2}).json()["result"]
    assert set(no_scores[0][0]) == {"id", "contents"}
    client = HttpRetriever(server_url)
    assert [h.id for h in client.search(["Hamlet"], 3)[0]] == [h.id for h in local]
    assert client.search(["Hamlet"], 3)[0][0].title == "Hamlet"
    assert httpx.get(f"{server_url}/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"topk": 3}, 422, "queries"),
        ({"queries": "Paris"}, 422, "queries"),
        ({"queries": [1, 2]}, 422, "queries"),
        ({"queries": []}, 422, "queries"),
        ({"queries": ["q"] * 9}, 413, "queries"),
        ({"queries": ["x" * 201]}, 413, "queries[0]"),
        ({"queries": ["Paris"], "topk": 0}, 422, "topk"),
        ({"queries": ["Paris"], "topk": 11}, 422, "topk"),
        ({"queries": ["Paris"], "topk": "3"}, 422, "topk"),
        ({"queries": ["Paris"], "return_scores": "yes"}, 422, "return_scores"),
        ({"queries": ["Paris"], "top_k": 3}, 422, "top_k"),
        ([1, 2], 422, "body"),
    ],
)
def test_malformed_requests_get_4xx_json_naming_the_field(server_url: str, body: object, status: int, field: str) -> None:
    r = httpx.post(f"{server_url}/retrieve", json=body)
    assert r.status_code == status
    assert r.json()["field"] == field and r.json()["error"]


def test_malformed_json_and_unknown_routes(server_url: str) -> None:
    r = httpx.post(f"{server_url}/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = httpx.get(f"{server_url}/retrieve")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(f"{server_url}/nope")
    assert r.status_code == 404 and "error" in r.json()


def test_client_raises_after_retries_against_stopped_server() -> None:
    client = HttpRetriever(f"http://127.0.0.1:{free_port()}", timeout_s=1, retries=2, backoff_s=0.01)
    with pytest.raises(SearchError, match="failed after 3 attempts"):
        client.search(["Paris"], 3)
    assert client.requests == 3 and client.failures == 3


def test_client_does_not_retry_a_4xx(server_url: str) -> None:
    client = HttpRetriever(server_url, retries=3)
    with pytest.raises(SearchError, match="refused the request: HTTP 422"):
        client.search(["Paris"], 0)
    assert client.requests == 1


def test_concurrent_requests_all_succeed(server_url: str) -> None:
    errors: list[str] = []

    def worker(i: int) -> None:
        with httpx.Client() as c:
            for j in range(10):
                r = c.post(f"{server_url}/retrieve", json={"queries": [f"history of {i} {j}"], "topk": 3})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_client_turns_every_malformed_server_answer_into_a_search_error() -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    bodies = {
        "not-json": PlainTextResponse("<html>oops</html>"),
        "list": JSONResponse([1, 2]),
        "short": JSONResponse({"result": []}),
        "bad-doc": JSONResponse({"result": [[{"document": {"id": 1, "contents": 5}}]]}),
        "no-contents": JSONResponse({"result": [[{"id": "x"}]]}),
    }
    app = FastAPI()
    mode = {"now": ""}

    @app.post("/retrieve")
    def retrieve() -> object:
        return bodies[mode["now"]]

    @app.get("/health")
    def health() -> object:
        return PlainTextResponse("fine") if mode["now"] == "not-json" else {"status": "ok"}

    with running_server(app) as url:
        client = HttpRetriever(url, timeout_s=5, retries=0)
        for name in bodies:
            mode["now"] = name
            with pytest.raises(SearchError, match="retrieval server"):
                client.search(["Paris"], 1)
        mode["now"] = "not-json"
        with pytest.raises(SearchError, match="not JSON"):
            client.health()


def test_retrieval_server_bounds_bodies_and_survives_hostile_json(server_url: str) -> None:
    big = httpx.post(f"{server_url}/retrieve", content=b" " * (2 * 1024 * 1024), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["field"] == "body"
    nested = httpx.post(f"{server_url}/retrieve", content=b"[" * 50_000 + b"]" * 50_000)
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
    huge_number = httpx.post(f"{server_url}/retrieve", content=b'{"queries": ["x"], "topk": ' + b"7" * 20_000 + b"}")
    assert huge_number.status_code == 400
    assert httpx.post(f"{server_url}/retrieve", json={"queries": ["Paris"], "topk": 1}).status_code == 200


def test_bm25_scores_are_lucenes_and_parquet_corpora_index(tmp_path: Path) -> None:
    """Lucene's BM25 by hand: idf ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl / avgdl)),
    k1 0.9, b 0.4, over analysed terms (stop words out, Snowball stems); a repeated query word counts twice."""
    rows = {"id": ["a", "b", "c"], "title": ["Red", "Blue", "Green"],
            "text": ["apple apple pie", "apple tart with cream", "grass"]}  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "c.parquet")
    build_bm25_index(tmp_path / "c.parquet", tmp_path / "idx", progress=False)
    bm25 = Bm25Retriever(tmp_path / "idx")
    # terms: a = red appl appl pie (4), b = blue appl tart cream (4; "with" is a stop word), c = green grass (2)
    avgdl, idf = 10 / 3, math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected = {"a": idf * 2 / (2 + 0.9 * (0.6 + 0.4 * 4 / avgdl)), "b": idf * 1 / (1 + 0.9 * (0.6 + 0.4 * 4 / avgdl))}
    once, twice = bm25.search(["apples", "Apple? APPLE!"], 3)
    assert [h.id for h in once] == ["a", "b"] and [h.score for h in once] == pytest.approx([expected["a"], expected["b"]])
    assert [h.score for h in twice] == pytest.approx([2 * expected["a"], 2 * expected["b"]])
    assert (once[0].title, once[0].text) == ("Red", "apple apple pie")  # read back from the index's own copy
