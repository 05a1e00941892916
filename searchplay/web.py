"""What our HTTP servers share: a request error naming its field, bounded JSON body parsing, an
admission limit, JSON answers (never an HTML page or a traceback) for unknown routes, wrong
methods and crashes, and `running_server` to run an app on a free loopback port in a thread
(tests, benchmarks, notebooks); on the client side, `post_retrying`, the one retry loop of the
retrieval client and the LLM judge."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ErrorRenderer = Callable[[str, "str | None", int], JSONResponse]
R = TypeVar("R")


def post_retrying(
    send: Callable[[], R],
    attempts: int,
    backoff_s: float,
    status: Callable[[R], int],
    retry: Callable[[R], str | None],
    transport_errors: tuple[type[Exception], ...],
    on_attempt: Callable[[bool], None] = lambda failed: None,
) -> tuple[R, str] | tuple[None, str]:
    """Call `send()` (one POST) up to `attempts` times, sleeping backoff_s * 2^(n-1) (at most 5 s) between tries.

    `transport_errors` raised by `send` and responses for which `retry` gives a reason are tried again;
    the first other response is returned for the caller to judge. After the last attempt: (None, the
    last error). `on_attempt(failed)` is called once per attempt, for the caller's counters. The
    client library is the caller's (httpx for the judge, urllib3 for the retrieval client).
    """
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), 5.0))
        try:
            response = send()
        except transport_errors as e:
            on_attempt(True)
            last = f"{type(e).__name__}: {e}"
            continue
        reason = retry(response)
        if reason is not None:
            on_attempt(True)
            last = reason
            continue
        on_attempt(status(response) >= 400)
        return response, last
    return None, last


class RequestError(ValueError):
    """A request the server cannot serve; `field` names the offending part."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The JSON body, refused with 413 past `max_bytes` (before reading it whole) and 400 when malformed,
    nested too deeply or holding a number too long to parse."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise RequestError("body", f"request body of {int(length)} bytes; the limit is {max_bytes}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError("body", f"request body over {max_bytes} bytes; the limit is {max_bytes}", 413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except RecursionError:
        raise RequestError("body", "malformed JSON: nested too deeply", 400) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and integers with too many digits
        raise RequestError("body", f"malformed JSON: {e}", 400) from None


class Admission:
    """At most `capacity` requests served and `waiting` queued at once; one more gets 503 at the door."""

    def __init__(self, capacity: int, waiting: int):
        self.limit, self.inside = capacity + waiting, 0

    def __enter__(self) -> Admission:
        if self.inside >= self.limit:
            raise RequestError(None, f"server busy: {self.inside} requests in progress or waiting; retry later", 503)
        self.inside += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.inside -= 1


def add_fallback_handlers(app: FastAPI, render: ErrorRenderer, routes_hint: str) -> None:
    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return render(f"no route {request.method} {request.url.path}; {routes_hint}", None, 404)

    @app.exception_handler(405)
    async def bad_method(request: Request, exc: Exception) -> JSONResponse:
        return render(f"method {request.method} not allowed on {request.url.path}", None, 405)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return render(str(exc), exc.field, exc.status)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return render(f"internal error: {type(exc).__name__}: {exc}", None, 500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(app: Any, health_path: str = "/health") -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a daemon thread until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            httpx.get(url + health_path, timeout=1)
            break
        except httpx.HTTPError:
            if time.time() > deadline:
                raise RuntimeError("test server did not start") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
