"""What our HTTP servers share: a request error naming its field, bounded JSON body parsing (size, a read
deadline, strings that are not Unicode), an admission limit, JSON answers (never an HTML page or a
traceback) for unknown routes, wrong methods and crashes, `serve_app` (uvicorn on h11 with bounded
request heads and a deadline for them) and `running_server` to run an app on a free loopback port in
a thread (tests, benchmarks, notebooks); on the client side, `post_retrying`, the one retry loop of
the retrieval client and the LLM judge."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
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


BUSY_RETRY_AFTER_S = 1  # what a refused client is told to wait (Retry-After)


class Admission:
    """At most `capacity` requests served and `waiting` queued at once. Requests to `paths` beyond them wait at the
    door (RequestGuard), first come first in, their body unread, for at most `door_wait_s`; then 503. Refusing at
    once made a crowd of clients that post again at once eat the CPU the work needs (reliability v3, finding 10:
    useful throughput fell 4.5-6.5x at 200 clients); a waiter costs a timer, and a place that frees is kept for
    the longest waiter (marked in its ASGI scope) so that no request arriving meanwhile takes it."""

    HELD = "searchplay.place_held"  # scope key: the door kept a place for this request

    def __init__(self, capacity: int, waiting: int, paths: frozenset[str] = frozenset(), door_wait_s: float = 1.0):
        self.limit, self.inside, self.paths, self.door_wait_s = capacity + waiting, 0, paths, door_wait_s
        self._door: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def full(self) -> bool:
        return self.inside >= self.limit

    def busy_message(self) -> str:
        return f"server busy: all {self.limit} places (in progress or waiting) are taken; retry in {BUSY_RETRY_AFTER_S} s"

    async def at_door(self, scope: MutableMapping[str, Any]) -> bool:
        """Whether a request may go on: at once while a place is free and nobody waits, else once a place is kept
        for it within `door_wait_s` (False: refuse it)."""
        if not self.full and not self._door:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._door.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.door_wait_s)
        except TimeoutError:
            if not waiter.done() or waiter.cancelled():
                return False  # a place kept for it in the same instant as its time ran out is used below
        finally:
            if waiter in self._door:
                self._door.remove(waiter)
        scope[self.HELD] = True
        return True

    @contextlib.contextmanager
    def place(self, scope: MutableMapping[str, Any]) -> Iterator[None]:
        """Hold a place while the work runs: the one kept at the door, else a free one, else 503 (a place went while
        this request's body was read)."""
        if not scope.pop(self.HELD, False):
            if self.full:
                raise RequestError(None, self.busy_message(), 503)
            self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1
            self.pass_place_on()

    def leave(self, scope: MutableMapping[str, Any]) -> None:
        """A request let in at the door has ended: a place kept for it and never taken (a malformed body, a client
        gone) is passed on, so that no waiter is left beside a free place."""
        if scope.pop(self.HELD, False):
            self.inside -= 1
        self.pass_place_on()

    def pass_place_on(self) -> None:
        while self._door and not self.full:
            waiter = self._door.popleft()
            if not waiter.done():
                self.inside += 1  # kept for it until its route takes it (place) or it ends (leave)
                waiter.set_result(None)
                return


class RequestGuard:
    """ASGI middleware that runs before routing. A request head over `max_head_bytes` gets 431 (h11 bounds a head
    that arrives in pieces; this catches one that arrives whole). With `hosts`, a Host header naming any other
    host gets 403: a web page elsewhere whose name an attacker points at 127.0.0.1 (DNS rebinding) must not
    read what we serve. With `admission`, a request to one of its paths waits at the door while every place is
    taken, and its 503 (rendered once) costs neither a body read nor routing."""

    def __init__(
        self, app: Any, render: ErrorRenderer, max_head_bytes: int, hosts: frozenset[str] | None, admission: Admission | None
    ) -> None:
        self.app, self.render, self.max_head_bytes, self.hosts, self.admission = app, render, max_head_bytes, hosts, admission
        if admission is not None:  # rendered once: a refusal at the door allocates nothing but its send
            self.busy = render(admission.busy_message(), None, 503)
            self.busy.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        door = self.admission if self.admission is not None and scope.get("path") in self.admission.paths else None
        if door is None:
            await self.app(scope, receive, send)
        elif not await door.at_door(scope):
            await self.busy(scope, receive, send)
        else:
            try:
                await self.app(scope, receive, send)
            finally:
                door.leave(scope)

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


def guard_requests(
    app: FastAPI,
    render: ErrorRenderer,
    max_head_bytes: int,
    hosts: frozenset[str] | None = None,
    admission: Admission | None = None,
) -> None:
    app.add_middleware(RequestGuard, render=render, max_head_bytes=max_head_bytes, hosts=hosts, admission=admission)


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


@contextlib.contextmanager
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
