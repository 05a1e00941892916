"""Other clients' latency while hostile clients attack our servers (reliability v2, findings 4 and 5).

Real servers on 127.0.0.1 (the retrieval server over the bundled BM25 index, the model server over
the tiny random model), one quiet client timing its requests alone and then during each attack:

  slow bodies      N sockets send headers, then their body one byte every 0.2 s (until 408)
  slow heads       N sockets send half a request head and nothing more (closed after the deadline)
  huge prompts     4 clients post ~1 MB prompts to serve-model, again and again (413)

and goodput under a crowd (reliability v3, finding 10): the real `searchplay serve-retriever` and
`serve-model` processes, then 16 and 200 keep-alive clients posting back to back for `--seconds`, a refused
client posting again at once (the worst case: no client backs off); answered requests per second at 200
beside 16 (target >= 0.7x).

  python benchmarks/hostile_clients.py [--sockets 36] [--requests 40] [--parts latency,crowd] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx

from searchplay.assets.names import index_path
from searchplay.assets.tiny import tiny_model_dir
from searchplay.config import ServerConfig, load_config
from searchplay.llm.openai_server import create_app as model_app
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.precision import cpu_model
from searchplay.search.bm25 import Bm25Retriever
from searchplay.search.server import create_app as retrieval_app
from searchplay.web import free_port, running_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(send: Callable[[], httpx.Response], n: int) -> tuple[float, int]:
    """(median latency in ms, number of non-200 answers) of n requests in a row."""
    took, bad = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        bad += send().status_code != 200
        took.append(1000 * (time.perf_counter() - t0))
    return statistics.median(took), bad


def attack(url: str, raw: bytes, drip: bytes | None, stop: threading.Event, count: int) -> list[threading.Thread]:
    """`count` sockets that send `raw`, then `drip` every 0.2 s (or nothing); each reconnects when the server
    answers or closes it, so the attack holds for as long as it runs."""
    host, port = url.removeprefix("http://").split(":")

    def one() -> None:
        while not stop.is_set():
            with socket.create_connection((host, int(port))) as s:
                s.settimeout(0.2)
                s.sendall(raw)
                while not stop.is_set():
                    try:
                        if drip:
                            s.sendall(drip)
                        s.recv(100)  # an answer (408) or b"" (closed): connect again
                        break
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def flood(url: str, stop: threading.Event, clients: int = 4) -> list[threading.Thread]:
    body = {"messages": [{"role": "user", "content": "word " * 200_000}]}

    def one() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                c.post(url + "/v1/chat/completions", json=body)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


async def _client(port: int, request: bytes, until: float, counts: dict[int, int]) -> None:
    """One keep-alive client posting `request` back to back; a raw socket, so that 200 of them cost the benchmark
    far less CPU than the server they measure."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            status = int(head[9:12])
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


def crowd(port: int, path: str, body: bytes, clients: int, seconds: float) -> dict[int, int]:
    """Answers by status of `clients` keep-alive clients posting `body` to `path` for `seconds`."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    counts: dict[int, int] = {}

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, head.encode() + body, until, counts) for _ in range(clients)))

    asyncio.run(run())
    return counts


def serving(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A real `searchplay serve-*` process on a free port, once it answers /health."""
    port = free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "searchplay", *args, "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"searchplay {' '.join(args)} did not answer /health within 300 s")


def crowd_rows(seconds: float) -> list[tuple[str, int, float, float, str]]:
    """(server, clients, answered/s, refused/s, goodput vs 16 clients) for both servers."""
    cases = [
        ("retrieval (BM25)", ["serve-retriever", "--index", "bundled", "--kind", "bm25", "--set", "server.max_waiting=32"],
         "/retrieve", b'{"queries": ["capital of France"], "topk": 3}'),
        ("serve-model (tiny)", ["serve-model", "--model", "tiny-random", "--engine", "transformers", "--set",
         "model.dtype=float32", "--set", "model.threads=1", "--set", "server.max_waiting=32"],
         "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'),
    ]  # fmt: skip
    rows = []
    for name, args, path, body in cases:
        proc, port = serving(args)
        try:
            crowd(port, path, body, 16, 2.0)  # warm-up
            base = 0.0
            for clients in (16, 200):
                counts = crowd(port, path, body, clients, seconds)
                ok, busy = counts.get(200, 0) / seconds, counts.get(503, 0) / seconds
                base = base or ok
                rows.append((name, clients, ok, busy, f"{ok / base:.2f}x"))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=36, help="slow sockets per attack")
    parser.add_argument("--requests", type=int, default=40, help="timed requests of the quiet client per row")
    parser.add_argument("--parts", default="latency,crowd", help="latency (the quiet client), crowd (goodput)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds each crowd row runs")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    if "crowd" in args.parts:
        print("| server | keep-alive clients | answered (200) per s | refused (503) per s | goodput vs 16 clients |")
        print("| --- | --- | --- | --- | --- |")
        for server, clients, ok, busy, ratio in crowd_rows(args.seconds):
            print(f"| {server} | {clients} | {ok:.0f} | {busy:.0f} | {ratio} |")
    if "latency" in args.parts:
        latency(args)


def latency(args: argparse.Namespace) -> None:
    cfg = load_config()
    limits = ServerConfig(max_waiting=32, body_deadline_s=10.0, head_deadline_s=10.0)
    retrieve = {"queries": ["capital of France"], "topk": 3}
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    rows = []
    with running_server(retrieval_app(Bm25Retriever(index_path("bundled", "bm25", cfg)), limits)) as r_url:
        quiet = lambda: httpx.post(r_url + "/retrieve", json=retrieve, timeout=60)  # noqa: E731
        rows.append(("retrieval", "none", *timed(quiet, args.requests)))
        head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        for name, raw, drip in (("slow bodies", head, b" "), ("slow heads", b"POST /retrieve HTTP/1.1\r\nHost: x\r\n", None)):
            stop = threading.Event()
            threads = attack(r_url, raw, drip, stop, args.sockets)
            time.sleep(0.5)
            rows.append(("retrieval", f"{args.sockets} {name}", *timed(quiet, args.requests)))
            stop.set()
            for t in threads:
                t.join(timeout=15)
    engine = TransformersEngine.load(str(tiny_model_dir(cfg)), "float32", threads=1)
    with running_server(model_app(engine, "tiny", ServerConfig(max_prompt_tokens=8192))) as m_url:
        quiet = lambda: httpx.post(m_url + "/v1/chat/completions", json=chat, timeout=60)  # noqa: E731
        rows.append(("serve-model", "none", *timed(quiet, args.requests)))
        stop = threading.Event()
        threads = flood(m_url, stop)
        time.sleep(1.0)
        rows.append(("serve-model", "4 clients posting 1 MB prompts", *timed(quiet, args.requests)))
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print("| server | attack | quiet client's median latency (ms) | its failed requests |")
    print("| --- | --- | --- | --- |")
    for server, what, ms, bad in rows:
        print(f"| {server} | {what} | {ms:.1f} | {bad} of {args.requests} |")


if __name__ == "__main__":
    main()
