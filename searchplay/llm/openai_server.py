"""An OpenAI-compatible chat server over a local model (`searchplay serve-model`), on the configured engine.

Implements `POST /v1/chat/completions` (messages, temperature, top_p, max_tokens, stop, seed;
one choice) and `GET /v1/models`, enough to serve a judge or a trained policy with no other
software. Invalid requests get OpenAI-style 4xx errors `{"error": {"message", "type", "param"}}`;
fields we do not implement (`stream: true`, `n > 1`, `logprobs`, penalties, tools, ...) are refused
by name, never silently ignored. Generation runs in a worker thread, one request at a time (the
model is not thread-safe); the work one request can cause is bounded by `ServerConfig`: body
bytes, prompt tokens, max_tokens, and `max_waiting` requests queued before 503.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from searchplay.config import ServerConfig
from searchplay.llm.base import Engine, SamplingParams
from searchplay.llm.chat import chat_ids
from searchplay.web import Admission, RequestError, add_fallback_handlers, guard_requests, read_json_body

ROLES = {"system", "user", "assistant"}
# Tokenizers of the models we serve average 3-5 characters per token on text and no vocabulary's tokens average
# more than 16; a prompt longer than max_prompt_tokens x 16 characters is refused before it is tokenized.
MAX_CHARS_PER_TOKEN = 16


def error_response(message: str, field: str | None, status: int) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": field}}, status_code=status)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RequestError(name, f"'{name}' must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


# Fields OpenAI clients send that we accept: only their no-op values where they would change the answer.
ACCEPTED = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "user",
    "stream",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
}
NO_OP = {"stream": False, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "n": 1}


def parse_chat_request(body: Any, max_tokens_limit: int) -> tuple[list[dict[str, str]], SamplingParams]:
    """Validate a chat request; unsupported fields are refused by name instead of silently ignored."""
    if not isinstance(body, dict):
        raise RequestError("body", "request body must be a JSON object")
    unknown = sorted(set(body) - ACCEPTED)
    if unknown:
        raise RequestError(unknown[0], f"unsupported field(s): {', '.join(unknown)}", 400)
    for name, allowed in NO_OP.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) != isinstance(allowed, bool) or value != allowed):
            what = (
                "streaming is not supported; this server answers with one JSON response"
                if name == "stream"
                else f"only {name}={allowed!r} is supported, got {value!r}"
            )
            raise RequestError(name, what, 400)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RequestError(f"messages[{i}]", "each message needs a role (system, user, assistant) and string content")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestError("stop", "'stop' must be a string or a list of strings")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", min(256, max_tokens_limit)))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= max_tokens_limit:
        raise RequestError("max_tokens", f"'max_tokens' must be an integer in [1, {max_tokens_limit}]")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise RequestError("seed", f"'seed' must be an integer in [0, 2^63), got {seed!r}")
    params = SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        max_new_tokens=max_tokens,
        stop=stop,
        seed=seed,
    )
    return [{"role": m["role"], "content": m["content"]} for m in messages], params


def create_app(engine: Engine, model_name: str, limits: ServerConfig | None = None) -> FastAPI:
    """The app; `limits` bounds body size, prompt tokens, max_tokens and the queue (ServerConfig defaults)."""
    limits = limits or ServerConfig()
    app = FastAPI(title="searchplay model server", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    admission = Admission(1, limits.max_waiting, frozenset({"/v1/chat/completions"}), limits.door_wait_s)
    tokenizing = anyio.CapacityLimiter(2)  # chat templates run in threads, never on the event loop

    def complete(prompt: list[int], params: SamplingParams) -> tuple[str, str, int]:
        with lock:
            g = engine.generate([prompt], params)[0]
        text = engine.tokenizer.decode(g.token_ids, skip_special_tokens=True)
        if g.stop_string:
            text = text.split(g.stop_string)[0]  # OpenAI semantics: the stop string is not returned
        return text, ("length" if g.finish_reason == "length" else "stop"), len(g.token_ids)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await read_json_body(request, limits.max_body_bytes, limits.body_deadline_s)
        messages, params = parse_chat_request(body, limits.max_new_tokens)
        requested = body.get("model", model_name)
        if requested not in (model_name, None, ""):
            raise RequestError("model", f"model {requested!r} is not served here; this server serves {model_name!r}", 404)
        chars = sum(len(m["content"]) for m in messages)
        if chars > limits.max_prompt_tokens * MAX_CHARS_PER_TOKEN:  # surely too long: refused without tokenizing
            raise RequestError("messages", f"prompt of {chars} characters; the limit is {limits.max_prompt_tokens} tokens", 413)
        prompt = await anyio.to_thread.run_sync(chat_ids, engine.tokenizer, messages, limiter=tokenizing)
        if len(prompt) > limits.max_prompt_tokens:
            raise RequestError("messages", f"prompt of {len(prompt)} tokens; the limit is {limits.max_prompt_tokens}", 413)
        with admission.place(request.scope):
            text, finish, n_out = await anyio.to_thread.run_sync(complete, prompt, params)
        n_prompt = len(prompt)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
            }
        )

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "searchplay"}]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    add_fallback_handlers(app, error_response, "use POST /v1/chat/completions or GET /v1/models")
    guard_requests(app, error_response, limits.max_head_bytes, admission=admission)
    return app
