"""The engine a command runs on, chosen in one place for ask, eval, serve-model and training.

`model.engine` and `model.dtype` are expected resolved (`device.resolve_numerics`); an `auto`
that reaches here is resolved the same way, so a library caller gets what the CLI would.
"""

from __future__ import annotations

from typing import Any

from searchplay.config import ModelConfig
from searchplay.llm.base import Engine
from searchplay.llm.device import choose_engine, resolve_device
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.llm.vllm_engine import VLLMEngine
from searchplay.precision import resolve_dtype


def engine_name(model: ModelConfig) -> str:
    return choose_engine(resolve_device(model.device).type)[0] if model.engine == "auto" else model.engine


def _vllm(weights: str, model: ModelConfig, seed: int) -> VLLMEngine:
    return VLLMEngine(weights, model.dtype, model.device, model.vllm_gpu_memory, seed, model.vllm_max_model_len)


def open_engine(weights: str, model: ModelConfig, seed: int = 0) -> Engine:
    """An engine over the model directory `weights` (ask, eval, serve-model)."""
    if engine_name(model) == "vllm":
        return _vllm(weights, model, seed)
    return TransformersEngine.load(weights, model.dtype, model.threads, model.keep_kv_mib, model.device)


def training_engine(policy: Any, tokenizer: Any, weights: str, model: ModelConfig, seed: int, threads: int) -> Engine:
    """The rollout engine of a run whose learner trains `policy` (fp32): our loop over that very model
    (bf16 autocast when model.dtype is bfloat16; no copy, nothing to sync), or vLLM started from the
    same weights on disk (`weights`) and sent each update's weights in memory. `threads`: torch CPU threads (0 = all)."""
    if engine_name(model) == "vllm":
        return _vllm(weights, model, seed)
    autocast = resolve_dtype(model.dtype, resolve_device(model.device).type).dtype == "bfloat16"
    return TransformersEngine(policy, tokenizer, threads, autocast_bf16=autocast, keep_kv_mib=model.keep_kv_mib)
