"""What our HTTP servers share: a request error naming its field, JSON body parsing, and JSON
answers (never an HTML page or a traceback) for unknown routes, wrong methods and crashes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ErrorRenderer = Callable[[str, "str | None", int], JSONResponse]


class RequestError(ValueError):
    """A request the server cannot serve; `field` names the offending part."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


async def read_json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError("body", f"malformed JSON: {e}", 400) from None


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
