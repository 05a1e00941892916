"""A transformers Engine: our own decoding loop over the model's forward with a KV cache.

Why not `model.generate`: we need per-sequence stop strings, the log-probabilities of the
sampled tokens, and finished sequences removed from the batch (via the cache's
`batch_select_indices`) so they cost nothing in later steps. The loop is short:

1. left-pad the prompts, prefill once;
2. each step: sample one token per active sequence, record its log-prob, check end-of-turn,
   max_new_tokens and stop strings (on the decoded tail), drop finished rows from the batch
   and the cache, feed the new tokens.

The engine can wrap a model that a Learner is training: generation then uses the same
in-memory weights, with no copy.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from pathlib import Path
from typing import Any

import torch

from searchplay.llm.base import Generation, SamplingParams

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_model_path(model: str) -> str:
    """'bundled' -> the exported SmolLM2; 'tiny-random' -> the test model; a directory as is; else a cached hub id."""
    if model == "bundled":
        from searchplay.assets import asset_file

        return str(asset_file("smollm2-135m-instruct"))
    if model == "tiny-random":
        from searchplay.llm.tiny import tiny_model_dir

        return str(tiny_model_dir())
    return model


def load_model(model: str, dtype: str = "bfloat16") -> tuple[Any, Any]:
    """(model, tokenizer) from a local directory, a hub id already cached, or 'bundled'. Never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    local = Path(path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        net = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], local_files_only=True)
    except OSError as e:
        where = "directory" if local else "Hugging Face id (must already be in the local cache; nothing is downloaded)"
        raise FileNotFoundError(f"cannot load model {model!r} as a {where}: {e}") from None
    net.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return net, tokenizer


def end_of_turn_ids(tokenizer: Any, model: Any) -> set[int]:
    """Token ids that end a model turn: eos plus the chat template's end marker when it has one."""
    ids = {i for i in [tokenizer.eos_token_id] if i is not None}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside top-k and outside the top-p nucleus with -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class TransformersEngine:
    def __init__(self, model: Any, tokenizer: Any, threads: int = 0, autocast_bf16: bool = False):
        """`autocast_bf16`: generate in bf16 from fp32 weights (a model the Learner trains)."""
        self.model, self.tokenizer, self.autocast_bf16 = model, tokenizer, autocast_bf16
        if threads:
            torch.set_num_threads(threads)
        self.eot_ids = end_of_turn_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eot_ids))
        self.stats = {"generate_calls": 0, "generated_tokens": 0, "generate_seconds": 0.0}
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # skip prefill logits

    @classmethod
    def load(cls, model: str = "bundled", dtype: str = "bfloat16", threads: int = 0) -> "TransformersEngine":
        net, tokenizer = load_model(model, dtype)
        return cls(net, tokenizer, threads)

    def _stop_hit(self, ids: list[int], stops: list[str], tail_tokens: int) -> str | None:
        if not stops:
            return None
        tail = self.tokenizer.decode(ids[-tail_tokens:], skip_special_tokens=False)
        for s in stops:
            if s in tail:
                return s
        return None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            return self._generate(prompts, params)

    def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        gen = torch.Generator(device="cpu")
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache()
        active = list(range(len(prompts)))  # row r of the batch is prompt active[r]
        out_ids: list[list[int]] = [[] for _ in prompts]
        out_lp: list[list[float]] = [[] for _ in prompts]
        finish: list[tuple[str, str | None]] = [("length", None)] * len(prompts)
        tail_tokens = max((len(self.tokenizer.encode(s, add_special_tokens=False)) for s in params.stop), default=0) + 2
        can_shrink = hasattr(cache, "batch_select_indices")
        step_ids, step_pos = input_ids, positions
        while active:
            logits = self.model(input_ids=step_ids, attention_mask=attention, position_ids=step_pos, use_cache=True,
                                **{self._cache_kw: cache}, **self._last_logits_only).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            if params.temperature <= 0:
                tokens = logits.argmax(-1)
            else:
                filtered = filter_logits(logits / params.temperature, params.top_k, params.top_p)
                tokens = torch.multinomial(torch.softmax(filtered, -1).cpu(), 1, generator=gen).squeeze(-1).to(device)
            token_lp = logprobs.gather(-1, tokens[:, None]).squeeze(-1)
            keep_rows: list[int] = []
            for r, i in enumerate(active):
                tok = int(tokens[r])
                if i < 0:  # finished earlier, kept only because the cache cannot shrink
                    continue
                out_ids[i].append(tok)
                out_lp[i].append(float(token_lp[r]))
                if tok in self.eot_ids:
                    finish[i] = ("eos", None)
                elif (hit := self._stop_hit(out_ids[i], params.stop, tail_tokens)) is not None:
                    finish[i] = ("stop", hit)
                elif len(out_ids[i]) >= params.max_new_tokens:
                    finish[i] = ("length", None)
                else:
                    keep_rows.append(r)
            self.stats["generated_tokens"] += sum(1 for i in active if i >= 0)
            if not keep_rows:
                break
            if can_shrink and len(keep_rows) < len(active):
                idx = torch.tensor(keep_rows, device=device)
                cache.batch_select_indices(idx)
                attention, step_pos, tokens = attention[idx], step_pos[idx], tokens[idx]
                active = [active[r] for r in keep_rows]
            elif not can_shrink:
                active = [a if r in keep_rows else -1 for r, a in enumerate(active)]
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=attention.dtype, device=device)], dim=1)
            step_pos = step_pos[:, -1:] + 1
            step_ids = tokens[:, None]
        if was_training:
            self.model.train()
        self.stats["generate_calls"] += 1
        self.stats["generate_seconds"] += time.perf_counter() - t0
        return [Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=False), lps, reason, stop)  # type: ignore[arg-type]
                for ids, lps, (reason, stop) in zip(out_ids, out_lp, finish)]
