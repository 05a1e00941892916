"""A transformers Engine: our own decoding loop over the model's forward with a KV cache.

Why not `model.generate`: we need per-sequence stop strings, the log-probabilities of the
sampled tokens, and finished sequences removed from the batch (via the cache's
`batch_select_indices`) so they cost nothing in later steps. The loop is short:

1. left-pad the prompts, prefill once (inside a `keep_kv()` block only the part of each prompt
   that kept keys/values do not already cover: see kv_store.py);
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache

from searchplay.llm.base import FinishReason, Generation, SamplingParams
from searchplay.llm.chat import end_of_turn_ids
from searchplay.llm.device import resolve_device
from searchplay.llm.kv_store import KeptSequence, KVStore, LayerKV, common_prefix_length
from searchplay.precision import resolve_dtype

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
MIN_SHARED_PREFIX = 16  # tokens; a shorter shared prefix is not worth its own forward pass


def load_model(model: str, dtype: str = "auto", device: str = "cpu", empty: bool = False) -> tuple[Any, Any]:
    """(model on `device`, tokenizer) from a local directory or a hub id already cached. Never downloads.
    `dtype` auto: bfloat16 where `device` computes it natively, else float32 (precision.py). `empty`: the model's
    shape on the meta device, no weights read and no memory taken (a sharded learner rank other than 0, whose shards
    are filled from rank 0's weights: rl/sharding.py)."""
    target = resolve_device(device)
    torch_dtype = DTYPES[resolve_dtype(dtype, target.type).dtype]
    local = Path(model).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        if empty:
            config = AutoConfig.from_pretrained(model, local_files_only=True)
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config, dtype=torch_dtype).eval(), _padded(tokenizer)
        net: Any = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, local_files_only=True)
    except OSError as e:
        where = "directory" if local else "Hugging Face id (must already be in the local cache; nothing is downloaded)"
        raise FileNotFoundError(f"cannot load model {model!r} as a {where}: {e}") from None
    return net.to(target).eval(), _padded(tokenizer)


def _padded(tokenizer: Any) -> Any:
    """The tokenizer with a pad token (its end of sequence when it names none)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
    def __init__(self, model: Any, tokenizer: Any, threads: int = 0, autocast_bf16: bool = False, keep_kv_mib: int = 2048):
        """`autocast_bf16`: generate in bf16 from fp32 weights (a model the Learner trains);
        `keep_kv_mib`: memory for keys/values kept between the turns of a `keep_kv()` block (0 = off)."""
        self.model, self.tokenizer, self.autocast_bf16 = model, tokenizer, autocast_bf16
        self.keep_kv_bytes = keep_kv_mib * 2**20
        self._store: KVStore | None = None
        if threads:
            torch.set_num_threads(threads)
        self.eot_ids = end_of_turn_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eot_ids))
        self.stats = {
            "generate_calls": 0,
            "generated_tokens": 0,
            "generate_seconds": 0.0,
            "prefill_tokens": 0,
            "reused_tokens": 0,  # prompt tokens encoded / taken from kept keys/values
            "prefill_seconds": 0.0,
        }  # time spent encoding prompts, up to the first new token
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # skip prefill logits

    @classmethod
    def load(
        cls, model: str, dtype: str = "auto", threads: int = 0, keep_kv_mib: int = 2048, device: str = "cpu"
    ) -> TransformersEngine:
        net, tokenizer = load_model(model, dtype, device)
        return cls(net, tokenizer, threads, keep_kv_mib=keep_kv_mib)

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
        device_type = next(self.model.parameters()).device.type
        autocast = torch.autocast(device_type, dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            return self._generate(prompts, params)

    @contextlib.contextmanager
    def keep_kv(self) -> Iterator[None]:
        """Within the block, finished sequences keep their keys/values and a prompt extending one prefills only its new tokens.

        Meant for one multi-turn rollout (`run_episodes`); the store is dropped at the end of the
        block, so keys/values never outlive the weights that computed them. Nested blocks share
        the outer store; `keep_kv_mib = 0` turns it off.
        """
        if self._store is not None or self.keep_kv_bytes <= 0:
            yield
            return
        self._store = KVStore(self.keep_kv_bytes)
        try:
            yield
        finally:
            self._store = None

    def sync_weights(self, model: Any) -> dict[str, float]:
        """Nothing to send: this engine generates with the learner's own model object."""
        if model is not self.model:
            raise ValueError("the transformers engine generates with the learner's model object; pass that model")
        return {}

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        """Nothing to free: the weights are the learner's, and kept keys/values live only inside keep_kv()."""
        yield

    def _next_tokens(
        self, logits: torch.Tensor, params: SamplingParams, no_end_yet: bool, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's next token and its log-prob under softmax(logits / T), the distribution sampled
        from (before top-k / top-p); with `no_end_yet`, end-of-turn tokens cannot be drawn."""
        scale = params.temperature if params.temperature > 0 else 1.0
        logprobs = torch.log_softmax(logits / scale, dim=-1)
        if no_end_yet:
            logits[:, list(self.eot_ids)] = float("-inf")
        if params.temperature <= 0:
            tokens = logits.argmax(-1)
        else:
            filtered = filter_logits(logits / params.temperature, params.top_k, params.top_p)
            tokens = sample(torch.softmax(filtered, -1).cpu(), gen).to(logits.device)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)

    def _finished(
        self, ids: list[int], too_early: bool, params: SamplingParams, tail_tokens: int
    ) -> tuple[FinishReason, str | None] | None:
        """Why a sequence ends with its last token, or None while it goes on."""
        if ids[-1] in self.eot_ids:
            return "eos", None
        if too_early:  # min_new_tokens not reached: stop strings and length wait
            return None
        if (hit := self._stop_hit(ids, params.stop, tail_tokens)) is not None:
            return "stop", hit
        if len(ids) >= params.max_new_tokens:
            return "length", None
        return None

    @staticmethod
    def _keep_finished(
        store: KVStore, prompt: np.ndarray, sampled: list[int], cache: Any, row: int, attention: torch.Tensor
    ) -> None:
        """Keep a finished row's keys/values (its prompt and every sampled token but the last) for the next turn."""
        ids = np.concatenate([prompt, np.asarray(sampled[:-1], dtype=np.int64)])
        kv = row_kv(cache, row, attention)
        if kv and kv[0][0].shape[1] != len(ids):
            raise RuntimeError(f"KV cache row holds {kv[0][0].shape[1]} tokens, expected {len(ids)}: engine bookkeeping bug")
        store.add(KeptSequence(ids, kv))

    def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        t0 = time.perf_counter()
        if any(len(p) == 0 for p in prompts):
            raise ValueError("generate: every prompt needs at least one token")
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        gen = torch.Generator(device="cpu")
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        prompt_arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
        logits, attention, positions, cache, active = self._prefill(prompt_arrays, device)
        self.stats["prefill_seconds"] += time.perf_counter() - t0
        out_ids: list[list[int]] = [[] for _ in prompts]
        out_lp: list[list[float]] = [[] for _ in prompts]
        finish: list[tuple[FinishReason, str | None]] = [("length", None)] * len(prompts)
        tail_tokens = max((len(self.tokenizer.encode(s, add_special_tokens=False)) for s in params.stop), default=0) + 2
        min_new = min(params.min_new_tokens, params.max_new_tokens)
        step = 0
        while True:  # row r of the batch is prompt active[r]
            step += 1  # every row gets its step-th token now
            tokens, token_lp = self._next_tokens(logits, params, step <= min_new, gen)
            keep_rows: list[int] = []
            for r, i in enumerate(active):
                out_ids[i].append(int(tokens[r]))
                out_lp[i].append(float(token_lp[r]))
                done = self._finished(out_ids[i], step < min_new, params, tail_tokens)
                if done is None:
                    keep_rows.append(r)
                    continue
                finish[i] = done
                if self._store is not None:
                    self._keep_finished(self._store, prompt_arrays[i], out_ids[i], cache, r, attention[r])
            self.stats["generated_tokens"] += len(active)
            if not keep_rows:
                break
            if len(keep_rows) < len(active):  # finished rows leave the batch and the cache
                idx = torch.tensor(keep_rows, device=device)
                cache.batch_select_indices(idx)
                attention, positions, tokens = attention[idx], positions[idx], tokens[idx]
                active = [active[r] for r in keep_rows]
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=attention.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self._forward(tokens[:, None], attention, positions, cache)
        if was_training:
            self.model.train()
        self.stats["generate_calls"] += 1
        self.stats["generate_seconds"] += time.perf_counter() - t0
        return [
            Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=False), lps, reason, stop)
            for ids, lps, (reason, stop) in zip(out_ids, out_lp, finish)
        ]

    def _forward(
        self, ids: torch.Tensor, attention: torch.Tensor | None, positions: torch.Tensor | None, cache: Any
    ) -> torch.Tensor:
        """Logits of the last position of each row, float32."""
        return (
            self.model(
                input_ids=ids,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                **{self._cache_kw: cache},
                **self._last_logits_only,
            )
            .logits[:, -1, :]
            .float()
        )

    def _prefill(
        self, prompts: list[np.ndarray], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any, list[int]]:
        """Encode the prompts; returns their last tokens' logits and a decode batch (mask, last positions, cache, row order).

        Each prompt's longest kept prefix (`keep_kv()`) is reused and only the rest is encoded.
        Rows are encoded in groups of similar new-token counts, so that padding stays small when
        the counts differ a lot (episodes that retrieved long or short documents); several groups
        are then merged into one right-aligned decode batch.
        """
        self._keep_shared_prefix(prompts, device)
        matches = [self._store.match(p) if self._store is not None else (None, 0) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) - matches[i][1])
        groups = []
        for members in length_groups([len(prompts[i]) - matches[i][1] for i in order]):
            rows = [order[k] for k in members]
            ids, attention, positions, cache = self._start_batch([prompts[i] for i in rows], [matches[i] for i in rows], device)
            groups.append((rows, self._forward(ids, attention, positions, cache), attention, positions, cache))
        if len(groups) == 1:
            rows, logits, attention, positions, cache = groups[0]
            return logits, attention, positions[:, -1:], cache, rows
        rows = [i for g in groups for i in g[0]]
        kvs = [row_kv(cache, r, attention[r]) for _, _, attention, _, cache in groups for r in range(len(attention))]
        lengths = [kv[0][0].shape[1] for kv in kvs]
        cache, attention = self._batch_cache(kvs, lengths, device)
        positions = torch.tensor(lengths, device=device)[:, None] - 1
        return torch.cat([g[1] for g in groups]), attention, positions, cache, rows

    def _batch_cache(self, rows: list[list[LayerKV]], lengths: list[int], device: torch.device) -> tuple[Any, torch.Tensor]:
        """A cache holding row i's first lengths[i] kept tokens right-aligned, and its attention mask (left padding masked)."""
        width = max(lengths)
        cache = DynamicCache()
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, n in enumerate(lengths):
            attention[i, width - n :] = 1
        if width == 0:
            return cache, attention.to(device)
        template = next(kv for kv, n in zip(rows, lengths) if n)
        for layer, (k0, v0) in enumerate(template):
            keys = k0.new_zeros((len(rows), k0.shape[0], width, k0.shape[2]))
            values = v0.new_zeros((len(rows), v0.shape[0], width, v0.shape[2]))
            for i, (kv, n) in enumerate(zip(rows, lengths)):
                if n:
                    keys[i, :, width - n :] = kv[layer][0][:, :n]
                    values[i, :, width - n :] = kv[layer][1][:, :n]
            cache.update(keys.to(device), values.to(device), layer)
        return cache, attention.to(device)

    def _start_batch(
        self, prompts: list[np.ndarray], matches: list[tuple[KeptSequence | None, int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Input ids, attention mask, positions and cache to encode one group of prompts.

        Each prompt's kept prefix goes into the cache (right-aligned) and the rest is input
        (left-padded); a row with a shorter prefix than another then has masked columns between
        its prefix and its input, which attention ignores.
        """
        rest = [p[n:] for p, (_, n) in zip(prompts, matches)]
        width = max(len(r) for r in rest)
        cache, cached_mask = self._batch_cache(
            [e.layers if e is not None else [] for e, _ in matches], [n for _, n in matches], device
        )
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        input_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, r in enumerate(rest):
            input_ids[i, width - len(r) :] = torch.from_numpy(r)
            input_mask[i, width - len(r) :] = 1
        attention = torch.cat([cached_mask, input_mask.to(device)], dim=1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, cached_mask.shape[1] :]
        self.stats["reused_tokens"] += sum(n for _, n in matches)
        self.stats["prefill_tokens"] += sum(len(r) for r in rest)
        return input_ids.to(device), attention, positions, cache

    def _keep_shared_prefix(self, prompts: list[np.ndarray], device: torch.device) -> None:
        """Encode once the prefix all prompts share (system prompt, instructions) when nothing kept covers it yet."""
        if len(prompts) < 2 or self._store is None:
            return
        n = min(min(common_prefix_length(prompts[0], p) for p in prompts[1:]), min(len(p) for p in prompts) - 1)
        if n < MIN_SHARED_PREFIX or self._store.match(prompts[0])[1] >= n:
            return
        cache = DynamicCache()
        self._forward(torch.from_numpy(prompts[0][:n])[None].to(device), None, None, cache)
        self.stats["prefill_tokens"] += n
        self._store.add(KeptSequence(prompts[0][:n].copy(), row_kv(cache, 0, torch.ones(n, dtype=torch.long, device=device))))


def sample(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row by inverse CDF: exact like torch.multinomial, ~10x cheaper on CPU for a large vocabulary."""
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def row_kv(cache: Any, row: int, mask_row: torch.Tensor) -> list[LayerKV]:
    """Copy one row's unmasked keys/values out of a batch cache, layer by layer."""
    cols = mask_row.nonzero().squeeze(-1)
    return [(layer.keys[row][:, cols], layer.values[row][:, cols]) for layer in cache.layers]


def length_groups(lengths: list[int], slack_tokens_per_row: int = 16, slack_fraction: float = 0.1) -> list[list[int]]:
    """Split ascending `lengths` into runs whose padding (to the run's longest) stays within a slack.

    A run may waste `slack_fraction` of its real tokens plus `slack_tokens_per_row` per row, so
    short prompts of slightly different lengths stay one batch, while 200- and 500-token ones do not.
    """
    groups: list[list[int]] = []
    total = 0
    for k, n in enumerate(lengths):
        if groups:
            rows = len(groups[-1]) + 1
            padding = n * rows - (total + n)
            if padding <= slack_fraction * (total + n) + slack_tokens_per_row * rows:
                groups[-1].append(k)
                total += n
                continue
        groups.append([k])
        total = n
    return groups
