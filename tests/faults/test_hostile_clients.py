"""Servers against hostile clients (reliability v2, findings 4 and 5), on real sockets.

Slow bodies no longer hold work slots (a body is read, within a deadline, before a slot is taken);
slow or endless request heads are cut off; oversized heads are refused; a prompt far past the token
limit is refused from its length before any tokenizing; and values a JSON decoder produces that no
tokenizer takes (lone surrogates) or no generator accepts (a seed of 10^30) get 4xx, not 500.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from searchplay.config import ServerConfig
from searchplay.llm.openai_server import create_app as model_app
from searchplay.search.server import create_app as retrieval_app
from searchplay.view.app import create_app as view_app
from searchplay.web import running_server

LIMITS = ServerConfig(max_waiting=2, body_deadline_s=3.0, max_head_bytes=8192)  # 4 served + 2 waiting: 6 slots in all


@pytest.fixture(scope="module")
def retrieval_url(bundled_bm25) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with running_server(retrieval_app(bundled_bm25, LIMITS), head_deadline_s=1.0, max_head_bytes=LIMITS.max_head_bytes) as url:
        yield url


@pytest.fixture(scope="module")
def model_url(tiny_engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with running_server(model_app(tiny_engine, "tiny", ServerConfig(max_new_tokens=8, max_prompt_tokens=256))) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _slow_body(url: str, stop: threading.Event, statuses: list[bytes]) -> None:
    """Headers promising 200 bytes, then one byte every 0.2 s until the server answers or `stop`."""
    with _connect(url) as s:
        s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                s.sendall(b" ")
                answer = s.recv(200)
            except TimeoutError:
                continue
            except OSError:
                break
            statuses.append(answer.split(b"\r\n")[0])
            break


def test_slow_bodies_hold_no_work_slot_and_get_408(retrieval_url: str) -> None:
    stop, statuses = threading.Event(), []  # type: ignore[var-annotated]
    attackers = [threading.Thread(target=_slow_body, args=(retrieval_url, stop, statuses)) for _ in range(36)]
    for t in attackers:
        t.start()
    time.sleep(0.5)
    answers = [
        httpx.post(retrieval_url + "/retrieve", json={"queries": ["capital of France"], "topk": 3}, timeout=30) for _ in range(20)
    ]
    for t in attackers:
        t.join(timeout=30)
    stop.set()
    assert [a.status_code for a in answers] == [200] * 20  # before: 503 for every one while the 36 held on
    assert len(statuses) == 36 and all(b" 408 " in s for s in statuses), statuses[:3]


def test_a_request_head_that_never_ends_is_cut_off(retrieval_url: str) -> None:
    with _connect(retrieval_url) as s:
        s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        t0 = time.perf_counter()
        assert s.recv(100) == b""  # closed by the server
        assert time.perf_counter() - t0 < 5
    assert httpx.get(retrieval_url + "/health").status_code == 200


@pytest.mark.parametrize("pad", [20_000, 100_000, 64 * 1024 * 1024])
def test_an_oversized_request_head_is_refused(retrieval_url: str, pad: int) -> None:
    """A head arriving whole gets 431; one arriving in pieces past h11's bound gets 400 (before: 64 MB taken)."""
    with _connect(retrieval_url) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server closed early: refused
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n")
        answer = s.recv(100)
    assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer
    assert httpx.get(retrieval_url + "/health").status_code == 200


def test_the_viewer_answers_only_for_its_own_host(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with running_server(view_app([tmp_path / "run"]), health_path="/api/runs") as base:
        assert httpx.get(base + "/api/runs").status_code == 200
        port = base.rsplit(":", 1)[1]
        assert httpx.get(base + "/api/runs", headers={"Host": f"localhost:{port}"}).status_code == 200
        forged = httpx.get(base + "/api/runs", headers={"Host": f"attacker.example:{port}"})
        assert forged.status_code == 403 and "attacker.example" in forged.json()["error"]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "body"),  # a lone surrogate: not Unicode
        ('{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}', 400, "body"),
        ('{"messages": [{"role": "user", "content": "hi"}], "seed": 1000000000000000000000000000000}', 422, "seed"),
        ('{"messages": [{"role": "user", "content": "a\\u0000b"}], "max_tokens": 2}', 200, None),  # NUL is text
    ],
)
def test_values_no_tokenizer_or_generator_takes_get_4xx(model_url: str, body: str, status: int, field: str | None) -> None:
    answer = httpx.post(model_url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text  # before: 500 and a reset connection for the first three
    if field:
        assert answer.json()["error"]["param"] == field


def test_a_lone_surrogate_in_a_query_gets_400(retrieval_url: str) -> None:
    body = '{"queries": ["\\udfff capital"], "topk": 3}'
    answer = httpx.post(retrieval_url + "/retrieve", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "surrogate" in answer.json()["error"]


def test_a_prompt_far_past_the_limit_is_refused_before_tokenizing(model_url: str) -> None:
    content = "word " * 200_000  # 1 MB
    answer = httpx.post(model_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    assert answer.status_code == 413
    assert "characters" in answer.json()["error"]["message"]  # judged by length: never tokenized
    ok = httpx.post(model_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and json.loads(ok.text)["choices"]
