"""HTTP retriever speaking the Search-R1 `/retrieve` API.

A urllib3 connection pool per retriever keeps connections alive; it does less work per request
than httpx did, and per-request work is the server's overhead on a batch of BM25 queries
(benchmarks/README.md, "Retrieval"). Connection errors, timeouts and 5xx answers are retried with
exponential backoff; after the last attempt `SearchError` is raised. A 4xx answer is the caller's
mistake and is raised at once with the server's message.
"""

from __future__ import annotations

from typing import Any

import orjson
import urllib3

from searchplay.search.base import Hit, SearchError
from searchplay.search.corpus import split_contents
from searchplay.web import post_retrying

JSON_HEADERS = {"content-type": "application/json"}


class HttpRetriever:
    def __init__(self, url: str, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.2):
        self.url = url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        # urllib3 neither retries nor redirects here: the retry loop is ours (post_retrying)
        self._pool = urllib3.PoolManager(maxsize=4, retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
        self.requests = 0
        self.failures = 0  # failed attempts, retried or not

    def close(self) -> None:
        self._pool.clear()

    def _count(self, failed: bool) -> None:
        self.requests += 1
        self.failures += failed

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(payload)

        def send() -> urllib3.BaseHTTPResponse:
            return self._pool.request("POST", f"{self.url}/retrieve", body=body, headers=JSON_HEADERS)

        response, last = post_retrying(
            send, self.retries + 1, self.backoff_s, _status, _server_error, (urllib3.exceptions.HTTPError,),
            on_attempt=self._count,
        )  # fmt: skip
        if response is None:
            raise SearchError(f"retrieval server {self.url} failed after {self.retries + 1} attempts; last error: {last}")
        if response.status >= 400:
            raise SearchError(f"retrieval server {self.url} refused the request: HTTP {response.status} {_text(response)}")
        try:
            return orjson.loads(response.data)  # several times faster than json on result batches
        except orjson.JSONDecodeError:
            raise SearchError(f"retrieval server {self.url} sent a body that is not JSON: {_text(response, 200)!r}") from None

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        data = self._post({"queries": queries, "topk": k, "return_scores": True})
        try:
            result = data["result"]
            if len(result) != len(queries):
                raise ValueError(f"{len(result)} result lists for {len(queries)} queries")
            return [[_hit(item) for item in hits] for hits in result]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SearchError(f"retrieval server {self.url} sent an unexpected response: {type(e).__name__}: {e}") from None

    def health(self) -> dict[str, Any]:
        try:
            return orjson.loads(self._pool.request("GET", f"{self.url}/health").data)
        except urllib3.exceptions.HTTPError as e:
            raise SearchError(f"retrieval server {self.url} is not reachable: {e}") from None
        except orjson.JSONDecodeError:
            raise SearchError(f"retrieval server {self.url} answered /health with a body that is not JSON") from None


def _text(response: urllib3.BaseHTTPResponse, limit: int = 300) -> str:
    return response.data[:limit].decode("utf-8", errors="replace")


def _status(response: urllib3.BaseHTTPResponse) -> int:
    return response.status


def _server_error(response: urllib3.BaseHTTPResponse) -> str | None:
    """Why an answer is worth asking again: the server failed (5xx), not the request."""
    return f"HTTP {response.status}: {_text(response, 200)}" if response.status >= 500 else None


def _hit(item: dict[str, Any]) -> Hit:
    doc, score = (item["document"], item.get("score", 0.0)) if "document" in item else (item, 0.0)
    title, text = split_contents(doc["contents"])
    return Hit(str(doc["id"]), title, text, float(score))
