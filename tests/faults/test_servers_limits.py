"""Servers under pressure: a bounded queue, and a clean exit on SIGTERM while a long request runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from searchplay.web import Admission, RequestError
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_admission_serves_capacity_plus_waiting_then_answers_503() -> None:
    door = Admission(capacity=1, waiting=2)
    with door.place({}), door.place({}), door.place({}):  # one served, two waiting
        with pytest.raises(RequestError) as busy, door.place({}):
            pass
        assert busy.value.status == 503 and "retry in 1 s" in str(busy.value)
    with door.place({}):  # the queue drained: admitted again
        assert door.inside == 1


def test_serve_model_exits_within_its_shutdown_budget_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "searchplay",
            "serve-model",
            "--model",
            "tiny-random",
            "--port",
            str(port),
            "--set",
            "server.shutdown_s=2",
            "--set",
            "model.dtype=float32",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.time() < deadline, "serve-model did not start"
                time.sleep(0.2)
        replies: list[int] = []

        def long_request() -> None:
            try:
                replies.append(
                    httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        timeout=60,
                        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "temperature": 1.0},
                    ).status_code
                )
            except httpx.HTTPError:
                replies.append(0)

        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(1.0)  # generating now
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.time() - t0 < 2 + 3  # the shutdown budget plus a little
        client.join(timeout=30)
        assert len(replies) == 1  # the client got an answer (or a closed connection), never a hang
    finally:
        if proc.poll() is None:
            proc.kill()
