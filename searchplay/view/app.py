"""`searchplay view`: a FastAPI app serving the run viewer page and the JSON it reads.

GET /                      the page (it polls /api/runs and redraws what changed while a run trains)
GET /api/runs              each run's name, configuration essentials, last step, `version`, or `error`
GET /api/metrics?run       metric columns: steps and one list per series
GET /api/steps?run         steps with logged trajectories
GET /api/trajectories?run&step&role&q&sort&desc&offset&limit    one page of trajectory rows
GET /api/trajectory?run&step&index | &id                        one trajectory in full
GET /api/pool?run&q&status&sort&desc&offset&limit               one page of the question pool
GET /api/evals             evaluation summaries given with --eval; /api/compare?a&b: B vs A as markdown

Every error is JSON {"error": message, "field": parameter} with a 4xx status (5xx only for a
damaged run file or a crash), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from searchplay.config import ServerConfig
from searchplay.eval.report import CompareError, compare
from searchplay.view.page import FILES, STATIC, plotly_js, served_page
from searchplay.view.query import QueryError
from searchplay.view.run_data import RunData, RunViewError, inside, open_runs
from searchplay.web import RequestError, add_fallback_handlers, guard_requests, loopback_hosts

ROUTES = "routes: /, /api/runs, /api/metrics, /api/steps, /api/trajectories, /api/trajectory, /api/pool, /api/evals, /api/compare"


def error_json(message: str, field: str | None, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise RequestError(name, f"query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(name, f"{name}={raw[:40]!r} is not an integer") from None
    if not lo <= value <= hi:
        raise RequestError(name, f"{name}={value} is outside {lo}..{hi}")
    return value


def _str(request: Request, name: str, max_len: int = 200) -> str:
    value = request.query_params.get(name, "")
    if len(value) > max_len:
        raise RequestError(name, f"{name} is {len(value)} characters; at most {max_len}")
    return value


def eval_summary(path: Path) -> dict[str, Any]:
    """An evaluation's summary, or `error` naming what is wrong with this one folder (the others still show)."""
    out = {"name": path.name, "path": str(path)}
    try:
        summary = json.loads(inside(path, path / "summary.json").read_text())
        if not isinstance(summary, dict) or not isinstance(summary.get("datasets", {}), dict):
            raise ValueError("not an evaluation summary (an object with datasets)")
    except (OSError, ValueError, RunViewError) as e:  # JSONDecodeError is a ValueError
        return {**out, "error": f"{path / 'summary.json'}: {e}"}
    return {**out, "summary": summary}


def create_app(run_dirs: list[Path], eval_dirs: list[Path] | None = None, bind_host: str = "127.0.0.1") -> FastAPI:
    """The viewer of `run_dirs` (overlaid in the curves) and the evaluations in `eval_dirs`; it answers only requests
    whose Host names this machine as served on `bind_host` (loopback names, or the address given with --host)."""
    runs = open_runs(run_dirs)
    evals = list(eval_dirs or [])
    app = FastAPI(title="searchplay run viewer", docs_url=None, redoc_url=None, openapi_url=None)
    add_fallback_handlers(app, error_json, ROUTES)
    guard_requests(app, error_json, ServerConfig().max_head_bytes, loopback_hosts(bind_host))

    @app.exception_handler(RunViewError)
    async def run_error(request: Request, exc: RunViewError) -> JSONResponse:
        return error_json(str(exc), None, exc.status)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        return error_json(str(exc), None, 422)

    def run_of(request: Request) -> RunData:
        return runs[_int(request, "run", 0, 0, len(runs) - 1)]

    def table(request: Request) -> dict[str, Any]:
        return {
            "text": _str(request, "q"),
            "sort": _str(request, "sort", 40),
            "desc": _str(request, "desc", 5) in ("1", "true"),
            "offset": _int(request, "offset", 0, 0, 10**9),
            "limit": _int(request, "limit", 50, 1, 500),
        }

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return served_page()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript")
        if name not in FILES:
            raise RequestError("name", f"no static file {name!r}", 404)
        return FileResponse(STATIC / name, media_type=FILES[name])

    @app.get("/api/runs")
    def api_runs() -> list[dict[str, Any]]:
        return [r.summary() for r in runs]

    @app.get("/api/metrics")
    def api_metrics(request: Request) -> dict[str, Any]:
        return run_of(request).metrics()

    @app.get("/api/steps")
    def api_steps(request: Request) -> list[dict[str, int]]:
        return run_of(request).steps()

    @app.get("/api/trajectories")
    def api_trajectories(request: Request) -> Any:
        run, step = run_of(request), _int(request, "step", None, 0, 10**9)
        return run.trajectories(step, _str(request, "role", 20), **table(request))

    @app.get("/api/trajectory")
    def api_trajectory(request: Request) -> dict[str, Any]:
        run, step = run_of(request), _int(request, "step", None, 0, 10**9)
        if request.query_params.get("id"):
            return run.trajectory(step, trajectory_id=_str(request, "id"))
        return run.trajectory(step, index=_int(request, "index", None, 0, 10**9))

    @app.get("/api/pool")
    def api_pool(request: Request) -> Any:
        return run_of(request).pool(status=_str(request, "status", 20), **table(request))

    @app.get("/api/evals")
    def api_evals() -> list[dict[str, Any]]:
        return [eval_summary(p) for p in evals]

    @app.get("/api/compare")
    def api_compare(request: Request) -> dict[str, str]:
        if not evals:
            raise RequestError(None, "no evaluations were given (searchplay view RUN_DIR --eval DIR --eval DIR)", 404)
        a, b = (_int(request, k, None, 0, len(evals) - 1) for k in ("a", "b"))
        for i in (a, b):
            if "error" in (checked := eval_summary(evals[i])):
                raise RequestError(None, checked["error"], 422)
        try:
            return {"markdown": compare(evals[a], evals[b])}
        except CompareError as e:
            raise RequestError(None, str(e), 422) from None

    return app
