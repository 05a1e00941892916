"""An LLM judge over any OpenAI-compatible chat endpoint.

Two questions are asked of it:
- `equivalent(question, golden_answers, prediction)`: does the prediction mean a golden answer?
- `answer_from_evidence(question, evidence)`: answer from the given documents only (short
  reasoning, then the answer in `<answer>` tags) — the paper's code verifies questions this way.

Failures never pass silently: after the retries a call returns `None` ("unknown"), which every
caller treats as a failure, and `errors` counts it. Identical requests are answered from an
sqlite cache keyed by model + request. Each verdict records the judge model's name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from searchplay.agent.protocol import last_tag
from searchplay.config import JudgeConfig, searchplay_home
from searchplay.web import post_retrying

EQUIVALENCE_PROMPT = (
    "Decide whether a predicted answer to a question is correct.\n"
    "Question: {question}\nCorrect answers (any one is enough): {golden}\nPredicted answer: {prediction}\n"
    "The prediction is correct if it refers to the same thing as one of the correct answers, even if worded "
    "differently. Reply with one word: yes or no."
)
EVIDENCE_PROMPT = (
    "Answer the question using only the documents below.\n\n{evidence}\n\nQuestion: {question}\n"
    "Think briefly, then give only the answer inside <answer> and </answer>."
)
_VERDICT = re.compile(r"^\W*(yes|no)\W*$", re.IGNORECASE)  # the whole reply is the verdict, nothing else


def _status(r: httpx.Response) -> int:
    return r.status_code


def _retry_reason(r: httpx.Response) -> str | None:
    """Why a judge answer is worth asking again: a server error, a timeout or rate limit, or no content."""
    if r.status_code >= 500 or r.status_code in (408, 429) or (r.is_success and _content(r) is None):
        return f"HTTP {r.status_code}: {r.text[:200]}"
    return None


def _content(response: httpx.Response) -> str | None:
    """The reply text of an OpenAI chat completion, or None when the body is not one."""
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return text if isinstance(text, str) else None


class JudgeConfigError(RuntimeError):
    """The judge endpoint refuses every request (bad key, unknown model, wrong URL)."""


@dataclass
class Verdict:
    value: bool | None  # None = unknown (error or unparseable): treat as failure
    model: str
    raw: str = ""


class JudgeCache:
    """Thread-safe sqlite map from request key to response text."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS judge (key TEXT PRIMARY KEY, model TEXT, response TEXT)")
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM judge WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, response: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judge VALUES (?, ?, ?)", (key, model, response))
            self._db.commit()


class LLMJudge:
    def __init__(self, cfg: JudgeConfig):
        if not cfg.base_url or not cfg.model:
            raise ValueError("judge.base_url and judge.model must both be set to use the LLM judge")
        self.cfg = cfg
        key = cfg.api_key or os.environ.get(cfg.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=headers, limits=httpx.Limits(max_connections=cfg.concurrency))
        cache_path = None if cfg.cache == "off" else Path(cfg.cache) if cfg.cache else searchplay_home() / "judge-cache.sqlite"
        self._cache = JudgeCache(cache_path) if cache_path else None
        self._lock = threading.Lock()
        self.calls = self.cache_hits = self.errors = 0

    def stats(self) -> dict[str, int]:
        return {"judge/calls": self.calls, "judge/cache_hits": self.cache_hits, "judge/errors": self.errors}

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def complete(self, prompt: str, readable: Callable[[str], bool] = lambda text: True) -> str | None:
        """One chat completion; None after the retries are spent. Only `readable` replies are cached.

        Timeouts, connection errors, 5xx, 408 and 429 are retried; another 4xx is the request's own
        problem and is not; 401, 403 and 404 mean a misconfigured judge (key, model, URL) and raise
        `JudgeConfigError` with the server's message, since every later call would fail the same way.
        """
        body = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.cfg.max_tokens,
        }
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self._cache and (hit := self._cache.get(key)) is not None:
            self._count("cache_hits")
            return hit
        url = f"{self.cfg.base_url.rstrip('/')}/chat/completions"

        def send() -> httpx.Response:
            return self._client.post(url, json=body)

        r, _ = post_retrying(
            send, self.cfg.retries + 1, 0.2, _status, _retry_reason, (httpx.HTTPError,),
            on_attempt=lambda failed: self._count("calls"),
        )  # fmt: skip
        if r is not None and r.status_code in (401, 403, 404):
            raise JudgeConfigError(
                f"judge {self.cfg.base_url} (model {self.cfg.model!r}) refused: HTTP {r.status_code} {r.text[:300]}"
            )
        text = _content(r) if r is not None and r.is_success else None  # another 4xx: asking again gives the same answer
        if text is None:
            self._count("errors")
            return None
        if self._cache and readable(text):
            self._cache.put(key, self.cfg.model, text)
        return text

    def equivalent(self, question: str, golden_answers: list[str], prediction: str) -> Verdict:
        raw = self.complete(
            EQUIVALENCE_PROMPT.format(question=question, golden="; ".join(golden_answers), prediction=prediction),
            lambda text: _VERDICT.match(text) is not None,
        )
        if raw is None:
            return Verdict(None, self.cfg.model)
        m = _VERDICT.match(raw)
        if m is None:
            self._count("errors")  # an answer we cannot read is an error, not a "no"
            return Verdict(None, self.cfg.model, raw)
        return Verdict(m.group(1).lower() == "yes", self.cfg.model, raw)

    def answer_from_evidence(self, question: str, evidence: str) -> str | None:
        raw = self.complete(
            EVIDENCE_PROMPT.format(question=question, evidence=evidence), lambda text: last_tag(text, "answer") is not None
        )
        if raw is None:
            return None
        answer = last_tag(raw, "answer")
        if answer is None:
            self._count("errors")
        return answer

    def map(self, fn: Any, items: list[tuple[Any, ...]]) -> list[Any]:
        """Run `fn(*item)` for every item with the configured concurrency, results in order."""
        if not items:
            return []
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            return list(pool.map(lambda args: fn(*args), items))
