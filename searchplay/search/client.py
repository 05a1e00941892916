"""HTTP retriever speaking the Search-R1 `/retrieve` API.

One `httpx.Client` per retriever keeps connections alive. Connection errors, timeouts and 5xx
answers are retried with exponential backoff; after the last attempt `SearchError` is raised.
A 4xx answer is the caller's mistake and is raised at once with the server's message.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from searchplay.search.base import Hit, SearchError
from searchplay.search.corpus import split_contents
from searchplay.web import post_retrying


class HttpRetriever:
    def __init__(self, url: str, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.2):
        self.url = url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self._client = httpx.Client(timeout=timeout_s)
        self.requests = 0
        self.failures = 0  # failed attempts, retried or not

    def close(self) -> None:
        self._client.close()

    def _count(self, failed: bool) -> None:
        self.requests += 1
        self.failures += failed

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        response, last = post_retrying(
            self._client, f"{self.url}/retrieve", payload, self.retries + 1, self.backoff_s,
            retry=lambda r: r.status_code >= 500, on_attempt=self._count,
        )  # fmt: skip
        if response is None:
            raise SearchError(f"retrieval server {self.url} failed after {self.retries + 1} attempts; last error: {last}")
        if response.status_code >= 400:
            raise SearchError(
                f"retrieval server {self.url} refused the request: HTTP {response.status_code} {response.text[:300]}"
            )
        try:
            return orjson.loads(response.content)  # several times faster than json on result batches
        except orjson.JSONDecodeError:
            raise SearchError(f"retrieval server {self.url} sent a body that is not JSON: {response.text[:200]!r}") from None

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
            return self._client.get(f"{self.url}/health").json()
        except httpx.HTTPError as e:
            raise SearchError(f"retrieval server {self.url} is not reachable: {e}") from None
        except ValueError:
            raise SearchError(f"retrieval server {self.url} answered /health with a body that is not JSON") from None


def _hit(item: dict[str, Any]) -> Hit:
    doc, score = (item["document"], item.get("score", 0.0)) if "document" in item else (item, 0.0)
    title, text = split_contents(doc["contents"])
    return Hit(str(doc["id"]), title, text, float(score))
