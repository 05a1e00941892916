"""The Engine protocol: batched generation from token ids, returning exactly what was sampled.

Engines take token-id prompts (never text) and return the sampled token ids, so that the
learner trains on the very tokens the policy produced. `logprobs` are those of the sampled
tokens under the tempered distribution softmax(logits / temperature) (temperature 1 when greedy),
which is what the learner recomputes. Top-k/top-p truncation is not part of them: training
rollouts run without truncation (the trainer refuses top_p < 1 or top_k > 0), so the learner's
distribution is exactly the one sampled from (docs/method.md, "Updates").
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "eos"]


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_new_tokens: int = 0  # end-of-turn tokens and stop strings are ignored before this many (benchmarks)


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason  # stop string / max_new_tokens / end-of-turn token
    stop_string: str | None = None


class Engine(Protocol):
    """Anything that turns token-id prompts into Generations (transformers here; vLLM on GPUs)."""

    tokenizer: Any  # a Hugging Face tokenizer (untyped)
    pad_id: int  # the id that pads batches of its token sequences (the learner uses the same)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]: ...

    def keep_kv(self) -> AbstractContextManager[None]:
        """A block over which the engine may reuse the keys/values of earlier generations whose
        text a later prompt extends (multi-turn episodes). Results are the same either way; an
        engine with automatic prefix caching (vLLM) or none at all returns a no-op context."""
        ...

    def sync_weights(self, model: Any) -> dict[str, float]:
        """Generate from `model`'s current weights from now on (after a learner update); returns
        metrics of the transfer (time, size), empty when the engine samples from `model` itself."""
        ...

    def asleep(self) -> AbstractContextManager[None]:
        """A block (the learner's update) during which the engine may free its accelerator memory."""
        ...
