"""Both servers fuzzed with arbitrary and almost-valid JSON bodies: never a 5xx, always JSON, alive after.

Hypothesis generates the bodies (a bounded number per server); the servers are the real apps on
loopback ports, the model server over the tiny random model.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchplay.config import ServerConfig
from searchplay.llm.openai_server import create_app as model_app
from searchplay.search.server import create_app as retrieval_app
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


@FUZZ
@given(body=RETRIEVE | JSON)
def test_fuzz_retrieval_server(retrieval_url: str, body: object) -> None:
    check(httpx.post(f"{retrieval_url}/retrieve", json=body, timeout=30))


@FUZZ
@given(body=CHAT | JSON)
def test_fuzz_model_server(model_url: str, body: object) -> None:
    check(httpx.post(f"{model_url}/v1/chat/completions", json=body, timeout=60))


def test_servers_alive_after_fuzzing(retrieval_url: str, model_url: str) -> None:
    assert httpx.post(f"{retrieval_url}/retrieve", json={"queries": ["Paris"], "topk": 1}).status_code == 200
    ok = httpx.post(f"{model_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200
