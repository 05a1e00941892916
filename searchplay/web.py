"""What our HTTP servers share: a request error naming its field, bounded JSON body parsing (size, a read
deadline, strings that are not Unicode), an admission limit, JSON answers (never an HTML page or a
traceback) for unknown routes, wrong methods and crashes, `serve_app` (uvicorn on h11 with bounded
request heads and a deadline for them) and `running_server` to run an app on a free loopback port in
a thread (tests, benchmarks, notebooks); on the client side, `post_retrying`, the one retry loop of
the retrieval client and the LLM judge."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

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


async def read_json_body(request: Request, max_bytes: int, deadline_s: float = 30.0) -> Any:
    """The JSON body, refused with 413 past `max_bytes` (before reading it whole), 408 when it has not all
    arrived within `deadline_s`, and 400 when malformed, nested too deeply or holding a string that is
    not Unicode (a lone surrogate such as "\\ud800", which no tokenizer or encoder takes)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise RequestError("body", f"request body of {int(length)} bytes; the limit is {max_bytes}", 413)
    chunks, size = [], 0
    try:
        with anyio.fail_after(deadline_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise RequestError("body", f"request body over {max_bytes} bytes; the limit is {max_bytes}", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError("body", f"request body not received within {deadline_s:g} s ({size} bytes came)", 408) from None
    try:  # orjson: fast, refuses lone surrogates and nesting past 1024, reads over-long integers as floats
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        reason = "nested too deeply (over 1024 levels)" if "depth limit" in str(e) else str(e)
        raise RequestError("body", f"malformed JSON: {reason}", 400) from None


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


class RequestGuard:
    """ASGI middleware that runs before routing. A request head over `max_head_bytes` gets 431 (h11 bounds a head
    that arrives in pieces; this catches one that arrives whole). With `hosts`, a Host header naming any other
    host gets 403: a web page elsewhere whose name an attacker points at 127.0.0.1 (DNS rebinding) must not
    read what we serve."""

    def __init__(self, app: Any, render: ErrorRenderer, max_head_bytes: int, hosts: frozenset[str] | None) -> None:
        self.app, self.render, self.max_head_bytes, self.hosts = app, render, max_head_bytes, hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any) -> JSONResponse | None:
        size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        size += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if size > self.max_head_bytes:
            return self.render(f"request head of {size} bytes; the limit is {self.max_head_bytes}", "headers", 431)
        if self.hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in self.hosts:
                return self.render(f"Host {host!r} is not served here", "host", 403)
        return None


def loopback_hosts(bind_host: str) -> frozenset[str]:
    """Host names a local server answers to: loopback names, the address it binds, and (bound to every interface)
    this machine's own names."""
    names = {"localhost", "127.0.0.1", "::1", bind_host.strip("[]").lower()}
    if bind_host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def guard_requests(app: FastAPI, render: ErrorRenderer, max_head_bytes: int, hosts: frozenset[str] | None = None) -> None:
    app.add_middleware(RequestGuard, render=render, max_head_bytes=max_head_bytes, hosts=hosts)


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


def guarded_h11(head_deadline_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request head: a socket that sends its request line and
    headers slowly, or never, is closed after `head_deadline_s` (uvicorn has no such limit of its own)."""

    class GuardedH11(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._cycle_awaited = self.cycle  # a new cycle starts once a complete head has arrived
            self._head_timer = self.loop.call_later(head_deadline_s, self._head_deadline)

        def _head_deadline(self) -> None:
            if self.cycle is self._cycle_awaited and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            self._head_timer.cancel()
            self._arm_head_deadline()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11


def server_config(app: Any, host: str, port: int, head_deadline_s: float, max_head_bytes: int, shutdown_s: int) -> uvicorn.Config:
    """uvicorn settings every server of ours uses: h11 (whose head size limit holds; httptools has none),
    request heads bounded in bytes and in time."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=guarded_h11(head_deadline_s),
        h11_max_incomplete_event_size=max_head_bytes,
        timeout_graceful_shutdown=shutdown_s,
    )


def serve_app(app: Any, host: str, port: int, head_deadline_s: float, max_head_bytes: int, shutdown_s: int) -> None:
    """Run `app` until Ctrl-C / SIGTERM with our server settings."""
    uvicorn.Server(server_config(app, host, port, head_deadline_s, max_head_bytes, shutdown_s)).run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    app: Any, health_path: str = "/health", head_deadline_s: float = 10.0, max_head_bytes: int = 65536
) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a daemon thread until the block ends, as serve_app would; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, head_deadline_s, max_head_bytes, 0))
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
