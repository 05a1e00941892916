"""Other clients' latency while hostile clients attack our servers (reliability v2, findings 4 and 5).

Real servers on 127.0.0.1 (the retrieval server over the bundled BM25 index, the model server over
the tiny random model), one quiet client timing its requests alone and then during each attack:

  slow bodies      N sockets send headers, then their body one byte every 0.2 s (until 408)
  slow heads       N sockets send half a request head and nothing more (closed after the deadline)
  huge prompts     4 clients post ~1 MB prompts to serve-model, again and again (413)

  python benchmarks/hostile_clients.py [--sockets 36] [--requests 40]
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import threading
import time
from collections.abc import Callable

import httpx

from searchplay.assets.names import index_path
from searchplay.assets.tiny import tiny_model_dir
from searchplay.config import ServerConfig, load_config
from searchplay.llm.openai_server import create_app as model_app
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.search.bm25 import Bm25Retriever
from searchplay.search.server import create_app as retrieval_app
from searchplay.web import running_server


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=36, help="slow sockets per attack")
    parser.add_argument("--requests", type=int, default=40, help="timed requests of the quiet client per row")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}")
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
