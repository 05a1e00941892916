"""The retrieval server: the Search-R1 `/retrieve` API over any Retriever (FastAPI + uvicorn).

Request `{"queries": [...], "topk": 3, "return_scores": true}`; response
`{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}` (without scores: a list of
documents per query, as Search-R1 does). Limits on queries per request, characters per query and
topk come from `ServerConfig`. Every invalid request gets a 4xx JSON body
`{"error": message, "field": name}`; searches run in a worker thread so the event loop keeps
serving other requests.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from searchplay.config import ServerConfig
from searchplay.search.base import Hit, Retriever, SearchError
from searchplay.web import Admission, RequestError, add_fallback_handlers, guard_requests, read_json_body, serve_app


def error_response(message: str, field: str | None, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def parse_retrieve_request(body: Any, limits: ServerConfig) -> tuple[list[str], int, bool]:
    """Validate a /retrieve body; RequestError names the offending field."""
    if not isinstance(body, dict):
        raise RequestError("body", "request body must be a JSON object")
    unknown = set(body) - {"queries", "topk", "return_scores"}
    if unknown:
        raise RequestError(sorted(unknown)[0], f"unknown field(s): {', '.join(sorted(unknown))}")
    if "queries" not in body:
        raise RequestError("queries", "missing field 'queries' (a list of strings)")
    queries = body["queries"]
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise RequestError("queries", "'queries' must be a list of strings")
    if not queries:
        raise RequestError("queries", "'queries' is empty")
    if len(queries) > limits.max_queries:
        raise RequestError("queries", f"{len(queries)} queries in one request; the limit is {limits.max_queries}", 413)
    for i, q in enumerate(queries):
        if len(q) > limits.max_query_chars:
            raise RequestError(f"queries[{i}]", f"query has {len(q)} characters; the limit is {limits.max_query_chars}", 413)
    topk = body.get("topk", 3)
    if not isinstance(topk, int) or isinstance(topk, bool):
        raise RequestError("topk", "'topk' must be an integer")
    if not 1 <= topk <= limits.max_topk:
        raise RequestError("topk", f"'topk' must be between 1 and {limits.max_topk}, got {topk}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise RequestError("return_scores", "'return_scores' must be true or false")
    return queries, topk, return_scores


def render_result(results: list[list[Hit]], return_scores: bool) -> dict[str, Any]:
    def doc(h: Hit) -> dict[str, str]:
        return {"id": h.id, "contents": h.contents}

    if return_scores:
        return {"result": [[{"document": doc(h), "score": h.score} for h in hits] for hits in results]}
    return {"result": [[doc(h) for h in hits] for hits in results]}


def create_app(retriever: Retriever, limits: ServerConfig, info: dict[str, Any] | None = None) -> FastAPI:
    app = FastAPI(title="searchplay retrieval server", docs_url=None, redoc_url=None)
    stats = {"requests": 0, "queries": 0, "errors": 0}
    limiter = anyio.CapacityLimiter(4)
    admission = Admission(4, limits.max_waiting, frozenset({"/retrieve"}), limits.door_wait_s)

    @app.post("/retrieve")
    async def retrieve(request: Request) -> Response:
        stats["requests"] += 1
        try:  # the body is read and checked before a work slot is taken: slow senders hold no slot
            body = await read_json_body(request, limits.max_body_bytes, limits.body_deadline_s)
            queries, topk, return_scores = parse_retrieve_request(body, limits)
            with admission.place(request.scope):
                results = await anyio.to_thread.run_sync(retriever.search, queries, topk, limiter=limiter)
        except RequestError as e:
            stats["errors"] += 1
            return error_response(str(e), e.field, e.status)
        except SearchError as e:
            stats["errors"] += 1
            return error_response(f"search failed: {e}", None, 503)
        stats["queries"] += len(queries)
        return Response(orjson.dumps(render_result(results, return_scores)), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **(info or {}), **stats}

    add_fallback_handlers(app, error_response, "use POST /retrieve or GET /health")
    guard_requests(app, error_response, limits.max_head_bytes, admission=admission)
    return app


def serve(retriever: Retriever, limits: ServerConfig, info: dict[str, Any] | None = None) -> None:
    app = create_app(retriever, limits, info)
    serve_app(app, limits.host, limits.port, limits.head_deadline_s, limits.max_head_bytes, limits.shutdown_s)
