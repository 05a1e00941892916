"""Our servers fuzzed: the retrieval and model servers with arbitrary and almost-valid JSON bodies, the run
viewer's API with arbitrary query parameters. Never a 5xx, always JSON, alive after.

Hypothesis generates the requests (a bounded number per server); the servers are the real apps on
loopback ports, the model server over the tiny random model, the viewer over a small run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchplay.config import ServerConfig
from searchplay.llm.openai_server import create_app as model_app
from searchplay.search.server import create_app as retrieval_app
from searchplay.view.app import create_app as view_app
from searchplay.web import running_server

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": JSON | st.text(max_size=40)}
)
CHAT = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "max_tokens": st.integers(-5, 100) | JSON,
        "temperature": st.floats(-1, 3) | JSON,
        "top_p": st.floats(-1, 2) | JSON,
        "stop": st.lists(st.text(max_size=5), max_size=3) | JSON,
        "seed": st.integers() | JSON,
        "n": st.integers(0, 3),
        "stream": st.booleans(),
        "model": st.text(max_size=10) | JSON,
        "logprobs": JSON,
        "extra": JSON,
    },
)
RETRIEVE = st.fixed_dictionaries(
    {},
    optional={
        "queries": st.lists(st.text(max_size=30), max_size=5) | JSON,
        "topk": st.integers(-3, 200) | JSON,
        "return_scores": st.booleans() | JSON,
        "extra": JSON,
    },
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # what a URL can carry
VIEW_PARAMS = st.dictionaries(
    st.sampled_from(["run", "step", "index", "id", "q", "sort", "desc", "offset", "limit", "role", "status", "a", "b"]),
    st.integers(-3, 10**12).map(str) | TEXT,
    max_size=5,
)
VIEW_ROUTES = ["runs", "metrics", "steps", "trajectories", "trajectory", "pool", "evals", "compare"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    assert isinstance(response.json(), dict)


@pytest.fixture(scope="module")
def retrieval_url(bundled_bm25):
    with running_server(retrieval_app(bundled_bm25, ServerConfig(max_queries=8, max_topk=10))) as url:
        yield url


@pytest.fixture(scope="module")
def model_url(tiny_engine):
    with running_server(model_app(tiny_engine, "tiny", ServerConfig(max_new_tokens=16, max_prompt_tokens=512))) as url:
        yield url


@pytest.fixture(scope="module")
def view_url(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("fuzz-run")
    (run / "trajectories").mkdir()
    (run / "config.toml").write_text('[model]\npath = "bundled"\n')
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "solver/reward": s / 4}) + "\n" for s in (1, 2)))
    record = {"meta": {"id": "q1", "role": "solver", "question": "Who?"}, "turns": [{"action": "search", "content": "x"}]}
    (run / "trajectories" / "step-000001.jsonl").write_text(json.dumps(record) + "\n")
    evals = [Path(__file__).resolve().parents[2] / "docs" / "baselines" / name for name in ("bm25", "closed-book")]
    with running_server(view_app([run], evals)) as url:
        yield url


@FUZZ
@given(route=st.sampled_from(VIEW_ROUTES), params=VIEW_PARAMS)
def test_fuzz_viewer_api(view_url: str, route: str, params: dict[str, str]) -> None:
    response = httpx.get(f"{view_url}/api/{route}", params=params, timeout=30)
    assert response.status_code < 500, response.text[:300]
    response.json()


@FUZZ
@given(body=RETRIEVE | JSON)
def test_fuzz_retrieval_server(retrieval_url: str, body: object) -> None:
    check(httpx.post(f"{retrieval_url}/retrieve", json=body, timeout=30))


@FUZZ
@given(body=CHAT | JSON)
def test_fuzz_model_server(model_url: str, body: object) -> None:
    check(httpx.post(f"{model_url}/v1/chat/completions", json=body, timeout=60))


def test_servers_alive_after_fuzzing(retrieval_url: str, model_url: str, view_url: str) -> None:
    assert httpx.get(f"{view_url}/api/trajectories", params={"step": 1}).json()["total"] == 1
    assert httpx.post(f"{retrieval_url}/retrieve", json={"queries": ["Paris"], "topk": 1}).status_code == 200
    ok = httpx.post(f"{model_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200
