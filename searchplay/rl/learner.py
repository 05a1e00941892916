"""The Learner: PPO-style updates of the policy from trajectories with advantages.

One update, in order:
1. pack the sequences (prompt + response) and their loss masks;
2. old log-probs: those of the weights that sampled the rollouts. Samples whose old log-probs
   were not scored yet (`score_old`) are scored now, which is only allowed while the weights are
   still the sampling weights (`Sample.version == Learner.version`, else `OffPolicyError`): a
   trainer that updates the solver first must score the proposer's samples before that update.
   With one epoch over one mini-batch the old log-probs are the current ones and come, detached,
   from the training forward pass itself; reference log-probs are scored if kl_coef > 0;
3. for each PPO epoch and mini-batch: split into micro-batches by a padded-token budget,
   forward + backward each (gradient accumulation; normalisers count the whole mini-batch),
   clip the gradient norm, step AdamW and the LR schedule (one scheduler step per optimizer step).

Inside a torch.distributed group (the Ray backend's learner ranks) each rank takes its share of
every mini-batch and of every scoring pass, and gradients are summed over the ranks before the
clip (rl/data_parallel.py): N ranks make the same update as one process on the same samples.
With `learner.sharding = "fsdp2"` each rank holds a shard of the weights, gradients and optimizer
state instead of a copy (rl/sharding.py); the ranks then run equal numbers of micro-batches.

Log-probs are those of softmax(logits / T) with T the rollout temperature, the distribution the
engine sampled from; `learner/logprob_gap_*` reports how far the learner's old log-probs are from
the engine's (`Trajectory.logprobs`), a training/inference mismatch check.

Weights stay in fp32 (the master copy); `bf16=True` runs forward/backward under bf16 autocast, or sharded
in units gathered in bf16 (`"auto"`: where the device computes bfloat16 natively; a CPU without bf16
instructions emulates it). Gradients are freed at the end of each update (none lives into the rollouts).
At lr 1e-6 a bf16 weight would round most updates away (bf16 has 8 bits of mantissa), which is
why the weights themselves are never bf16. The engine generates with this same model object.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from searchplay.agent.trajectory import Trajectory
from searchplay.config import LearnerConfig
from searchplay.precision import resolve_dtype
from searchplay.rl.data_parallel import all_reduce_floats, all_reduce_grads, gather_rows, my_share, rank_and_world
from searchplay.rl.losses import aggregate, entropy_from_logits, kl_penalty, ppo_clip_loss
from searchplay.rl.sharding import (
    TrainedLogits,
    full_optimizer_state,
    full_state_dict,
    load_full_optimizer_state,
    load_optimizer_shards,
    pad_chunks,
    save_optimizer_shards,
    shard,
)


@dataclass
class Sample:
    """One sequence to learn from: token ids, which of them are trained, and their advantage."""

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    advantage: float | torch.Tensor  # scalar, or one value per response token
    rollout_logprobs: list[float] | None = None  # the engine's, per response token (mismatch check)
    version: int = 0  # Learner.version of the weights that sampled it
    old_logprobs: torch.Tensor | None = None  # per target position (len - 1), set by Learner.score_old

    @classmethod
    def from_trajectory(cls, traj: Trajectory, advantage: float | torch.Tensor, version: int = 0) -> Sample:
        return cls(traj.prompt_ids, traj.response_ids, traj.loss_mask, advantage, traj.logprobs, version)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


class OffPolicyError(RuntimeError):
    """Samples without old log-probs reached an update after the weights that sampled them changed."""


def lr_lambda(cfg: LearnerConfig, total_steps: int) -> Any:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine" and total_steps > cfg.warmup_steps:
            progress = min(1.0, (step - cfg.warmup_steps) / (total_steps - cfg.warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def resolve_sharding(setting: str, world: int) -> bool:
    """Whether the learner shards (`learner.sharding`): "auto" shards in a group of 2+ ranks."""
    return setting == "fsdp2" or (setting == "auto" and world > 1)


def enable_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (less memory, ~30% more compute). transformers
    renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`; use whichever exists."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.config.use_cache = False


class Learner:
    def __init__(
        self,
        model: Any,
        cfg: LearnerConfig,
        reference: Any | None = None,
        total_steps: int = 1000,
        pad_id: int = 0,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ):
        """`total_steps`: planned optimizer steps (the cosine length when cfg.total_steps is 0);
        `temperature`: the rollout temperature, so that log-probs are those of the sampled distribution;
        `device`: where a sharded rank's policy built on the meta device will live (else the policy's own)."""
        self.model, self.cfg, self.reference, self.pad_id = model, cfg, reference, pad_id
        own = next(model.parameters()).device
        self.device = device or own  # the policy's; batches, the reference and old log-probs follow it
        if reference is not None and next(reference.parameters()).device not in (own, self.device):
            raise ValueError(f"the reference model is on {next(reference.parameters()).device}, the policy on {self.device}")
        self.temperature = temperature if temperature > 0 else 1.0
        if any(p.dtype != torch.float32 for p in model.parameters() if p.requires_grad):
            raise ValueError("the Learner keeps fp32 master weights: load the policy in float32 (bf16 is used via autocast)")
        # learner.bf16 = "auto": autocast only where the device computes bfloat16 natively (precision.py)
        self.bf16 = cfg.bf16 if isinstance(cfg.bf16, bool) else resolve_dtype("auto", self.device.type).dtype == "bfloat16"
        if cfg.gradient_checkpointing:
            enable_checkpointing(model)
        self.rank, self.world = rank_and_world()
        self.sharded = resolve_sharding(cfg.sharding, self.world)
        if cfg.lora_rank and self.sharded:
            raise ValueError("learner.lora_rank > 0 with a sharded learner is not supported: use one rank")
        # the forward the learner calls: the model's, or the root of its shards (each rank holds 1/world of it)
        self.policy = shard(model, self.device, cfg.offload, self.bf16) if self.sharded else TrainedLogits(model)
        self.reference_policy = (
            None
            if reference is None
            else shard(reference, self.device, cfg.offload or cfg.offload_reference, self.bf16)
            if self.sharded
            else TrainedLogits(reference)
        )
        if reference is None and cfg.lora_rank and cfg.kl_coef > 0:
            self.reference_policy = TrainedLogits(model, adapters_off=True)  # LoRA: the base is the reference
        self.trained_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, cfg.total_steps or total_steps))
        self.rng = random.Random(cfg.seed)

    @property
    def version(self) -> int:
        """Optimizer steps taken so far: which weights a sample was generated with."""
        return int(self.scheduler.last_epoch)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast in one process; sharded, the units are gathered in bf16 instead (sharding.shard)."""
        on = self.bf16 and not self.sharded
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def _reshard(self, *policies: TrainedLogits | None) -> None:
        """Free the gathered root of sharded policies after no-grad forwards: FSDP2 keeps a root unsharded after
        its forward, expecting the backward that a scoring pass never runs (a full fp32 embedding and output
        projection held through the rollouts otherwise)."""
        for policy in policies:
            if self.sharded and isinstance(policy, FSDPModule):
                policy.reshard()

    def _tensors(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Right-padded ids, attention, and per-target-position mask/advantage tensors."""
        width = max(len(s) for s in samples)
        ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros((len(samples), width - 1))
        adv = torch.zeros((len(samples), width - 1))
        for i, s in enumerate(samples):
            seq = s.prompt_ids + s.response_ids
            ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            start, end = len(s.prompt_ids) - 1, len(seq) - 1  # position t predicts token t + 1
            mask[i, start:end] = torch.tensor(s.loss_mask, dtype=torch.float)
            a = s.advantage
            adv[i, start:end] = a.float() if isinstance(a, torch.Tensor) else float(a)
        return {k: v.to(self.device) for k, v in {"ids": ids, "attention": attention, "mask": mask, "adv": adv}.items()}

    def _trained_logits(self, policy: TrainedLogits, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits / temperature at trained positions only, and those positions.

        The vocabulary projection and softmax run only where mask == 1: prompts and retrieved
        documents are most of every sequence, and a full (tokens x vocabulary) softmax over them
        would dominate the update's time and memory.
        """
        where = t["mask"].bool()
        with self._autocast():
            logits = policy(t["ids"], t["attention"], where, self.temperature)
        return logits, where

    def _logprobs(self, policy: TrainedLogits, t: dict[str, torch.Tensor], logits: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs of the targets at trained positions, zero elsewhere."""
        where = t["mask"].bool()
        if logits is None:
            logits, where = self._trained_logits(policy, t)
        picked = torch.log_softmax(logits, -1).gather(-1, t["ids"][:, 1:][where][:, None]).squeeze(-1)
        return torch.zeros_like(t["mask"]).masked_scatter(where, picked)

    def _logprobs_entropy(self, policy: TrainedLogits, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, where = self._trained_logits(policy, t)
        return self._logprobs(policy, t, logits), torch.zeros_like(t["mask"]).masked_scatter(where, entropy_from_logits(logits))

    def _my_chunks(self, indices: list[int], samples: list[Sample]) -> list[list[int] | None]:
        """Micro-batches of this rank's share of `indices` (all of them in one process). Sharded, every rank
        gets as many as the rank with the most: None stands for an empty one (`_empty_pass`)."""
        chunks: list[list[int] | None] = list(
            self._index_chunks(my_share(indices, [len(s) for s in samples], self.rank, self.world), samples)
        )
        if not self.sharded:
            return chunks
        most = int(all_reduce_floats({"n": float(len(chunks))}, op="max")["n"])
        return pad_chunks(chunks, most)

    def _empty_pass(self, policy: TrainedLogits, backward: bool) -> None:
        """A sharded rank's stand-in for a micro-batch it does not have: the same collectives, zero loss."""
        one = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
        t = {"ids": one, "attention": torch.ones_like(one), "mask": torch.ones((1, 1), device=self.device)}
        logits, _ = self._trained_logits(policy, t)
        if backward:
            (logits.sum() * 0.0).backward()

    @torch.no_grad()
    def _score(self, policy: TrainedLogits, indices: list[int], samples: list[Sample]) -> dict[int, torch.Tensor]:
        """Log-probs of the samples `indices` under `policy`, keyed by sample index, one per target position."""
        policy.eval()
        scored: dict[int, torch.Tensor] = {}
        for chunk in self._my_chunks(indices, samples):
            if chunk is None:
                self._empty_pass(policy, backward=False)
                continue
            rows = self._logprobs(policy, self._tensors([samples[i] for i in chunk]))
            scored.update((i, row[: len(samples[i]) - 1]) for i, row in zip(chunk, rows))
        self._reshard(policy)
        return gather_rows(scored, self.device)

    @contextlib.contextmanager
    def sampled_at(self, temperature: float) -> Any:
        """Score log-probs at `temperature` inside the block: a role sampled at its own temperature (SSP: proposer
        0.8, solver 1.0) is scored under the distribution it was sampled from."""
        before, self.temperature = self.temperature, temperature if temperature > 0 else self.temperature
        try:
            yield
        finally:
            self.temperature = before

    def score_old(self, samples: list[Sample]) -> None:
        """Store each sample's old log-probs; call while the weights are still those that sampled them."""
        stale = {s.version for s in samples} - {self.version}
        if stale:
            raise OffPolicyError(f"samples from weights version {sorted(stale)} cannot be scored at version {self.version}")
        scored = self._score(self.policy, list(range(len(samples))), samples)
        for i, s in enumerate(samples):
            s.old_logprobs = scored[i]

    def update(self, samples: list[Sample], lr_scale: float = 1.0, kl_scale: float = 1.0) -> dict[str, float]:
        """One PPO update over `samples`; returns learner metrics. `lr_scale` and `kl_scale` multiply the
        learning rate and the KL coefficient for this update only (a role's own settings)."""
        samples = [s for s in samples if sum(s.loss_mask) > 0]
        if not samples:
            return {"learner/samples": 0.0}
        t0 = time.perf_counter()
        cfg = self.cfg
        mini_size = cfg.mini_batch_size or len(samples)
        order = list(range(len(samples)))
        unscored = [s for s in samples if s.old_logprobs is None]
        if any(s.version != self.version for s in unscored):
            raise OffPolicyError(
                "samples sampled before the last optimizer step have no old log-probs: "
                "call Learner.score_old on them before the first update of the step"
            )
        # One epoch over one mini-batch is exactly on-policy: the old log-probs of samples not scored
        # yet are the current ones and come from the training forward pass itself (detached).
        on_policy = cfg.ppo_epochs == 1 and mini_size >= len(samples)
        if unscored and not on_policy:
            self.score_old(unscored)
        ref = (
            self._score(self.reference_policy, order, samples) if self.reference_policy is not None and cfg.kl_coef > 0 else None
        )
        self.policy.train()
        sums: dict[str, float] = {
            "loss": 0.0,
            "pg_loss": 0.0,
            "kl": 0.0,
            "entropy": 0.0,
            "clipfrac": 0.0,
            "grad_norm": 0.0,
            "ratio_dev": 0.0,
        }
        gap = _Gap()
        tokens_seen, optimizer_steps = 0, 0
        for epoch in range(cfg.ppo_epochs):
            self.rng.shuffle(order)
            for lo in range(0, len(order), mini_size):
                mini = order[lo : lo + mini_size]
                n_tokens = float(sum(sum(samples[i].loss_mask) for i in mini))
                self.optimizer.zero_grad(set_to_none=True)
                for chunk in self._my_chunks(mini, samples):
                    if chunk is None:
                        self._empty_pass(self.policy, backward=True)
                        continue
                    batch = [samples[i] for i in chunk]
                    t = self._tensors(batch)
                    width = t["mask"].shape[1]
                    logp, entropy = self._logprobs_entropy(self.policy, t)
                    old_lp = torch.stack(
                        [
                            _pad(s.old_logprobs, width) if s.old_logprobs is not None else row.detach()
                            for s, row in zip(batch, logp)
                        ]
                    )
                    if epoch == 0:
                        gap.add(batch, old_lp, t["mask"])
                    pg, clipped = ppo_clip_loss(logp, old_lp, t["adv"], t["mask"], cfg.clip_low, cfg.clip_high, cfg.dual_clip)
                    loss = aggregate(pg, t["mask"], cfg.loss_agg, n_tokens, len(mini))
                    if ref is not None:
                        kl = kl_penalty(logp, torch.stack([_pad(ref[i], width) for i in chunk]), cfg.kl_estimator)
                        kl_term = aggregate(kl, t["mask"], cfg.loss_agg, n_tokens, len(mini))
                        loss = loss + cfg.kl_coef * kl_scale * kl_term
                        sums["kl"] += float((kl.detach() * t["mask"]).sum())
                    if cfg.entropy_coef:
                        loss = loss - cfg.entropy_coef * aggregate(entropy, t["mask"], cfg.loss_agg, n_tokens, len(mini))
                    loss.backward()
                    sums["loss"] += float(loss.detach())
                    sums["pg_loss"] += float(pg.detach().sum())
                    sums["entropy"] += float((entropy.detach() * t["mask"]).sum())
                    sums["clipfrac"] += float(clipped.detach().sum())
                    sums["ratio_dev"] += float(((logp.detach() - old_lp).exp() - 1).abs().mul(t["mask"]).sum())
                    tokens_seen += int(t["attention"].sum())
                if not self.sharded:  # sharded, the backward passes summed the gradients already
                    all_reduce_grads(self.model.parameters())  # no-op in one process
                norm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                )
                norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
                for group in self.optimizer.param_groups:  # the scheduler's step below sets the next lr afresh
                    group["lr"] *= lr_scale
                self.optimizer.step()
                self.scheduler.step()
                sums["grad_norm"] += float(norm)
                optimizer_steps += 1
        self.optimizer.zero_grad(set_to_none=True)  # no gradient lives on into the rollouts that follow
        self.policy.eval()
        grad_norm = sums.pop("grad_norm")  # the same on every rank: not summed
        sums = all_reduce_floats({**sums, "tokens_seen": float(tokens_seen)})
        tokens_seen = int(sums["tokens_seen"])
        trained = float(sum(sum(s.loss_mask) for s in samples)) * cfg.ppo_epochs
        seconds = time.perf_counter() - t0
        return {
            "learner/samples": float(len(samples)),
            "learner/loss": sums["loss"] / optimizer_steps,
            "learner/pg_loss": sums["pg_loss"] / trained,
            "learner/kl": sums["kl"] / trained if ref is not None else 0.0,
            "learner/entropy": sums["entropy"] / trained,
            "learner/clipfrac": sums["clipfrac"] / trained,
            "learner/ratio_dev": sums["ratio_dev"] / trained,
            "learner/grad_norm": grad_norm / optimizer_steps,
            "learner/lr": float(self.scheduler.get_last_lr()[0]) * lr_scale,
            "learner/optimizer_steps": float(optimizer_steps),
            "learner/trained_tokens": trained,
            "learner/tokens_per_s": tokens_seen / seconds,
            "learner/seconds": seconds,
            **gap.metrics(),
        }

    @torch.no_grad()
    def token_kl(self, samples: list[Sample]) -> list[torch.Tensor]:
        """Per response token KL(policy || reference) estimates (0 on masked tokens), for KL-in-reward."""
        if self.reference_policy is None:
            raise ValueError("KL needs a reference model: set learner.kl_coef > 0")
        result: dict[int, torch.Tensor] = {}
        for chunk in self._my_chunks(list(range(len(samples))), samples):
            if chunk is None:
                self._empty_pass(self.policy, backward=False)
                self._empty_pass(self.reference_policy, backward=False)
                continue
            batch = [samples[i] for i in chunk]
            t = self._tensors(batch)
            kl = kl_penalty(self._logprobs(self.policy, t), self._logprobs(self.reference_policy, t), self.cfg.kl_estimator)
            for i, row, s in zip(chunk, kl * t["mask"], batch):
                start = len(s.prompt_ids) - 1
                result[i] = row[start : start + len(s.response_ids)]
        self._reshard(self.policy, self.reference_policy)
        result = gather_rows(result, self.device)
        return [result[i] for i in range(len(samples))]

    def _index_chunks(self, indices: list[int], samples: list[Sample]) -> list[list[int]]:
        """Micro-batches of sample indices (packing by the token budget)."""
        by_len = sorted(indices, key=lambda i: len(samples[i]))
        out: list[list[int]] = []
        current: list[int] = []
        for i in by_len:
            width = max([len(samples[j]) for j in current] + [len(samples[i])])
            if current and width * (len(current) + 1) > self.cfg.micro_batch_tokens:
                out.append(current)
                current = []
            current.append(i)
        if current:
            out.append(current)
        return out

    def full_weights(self) -> dict[str, torch.Tensor] | None:
        """The policy's full weights on the CPU when sharded (rank 0; other ranks get an empty dict; every rank
        calls it), None when not: the model's own state dict is whole then."""
        return full_state_dict(self.policy) if self.sharded else None

    def state_dict(self, shards: Path | None = None) -> dict[str, Any]:
        """Optimizer, schedule and RNG state, loadable into any number of ranks. The optimizer's in one process's
        format (sharded: a collective, whole on rank 0), or sharded with `shards`: each rank writes its part into
        that folder and the state names it (`{"shards": folder name}`)."""
        if shards is not None and self.sharded:
            save_optimizer_shards(self.policy, self.optimizer, shards)
            optimizer: dict[str, Any] = {"shards": shards.name}
        elif self.sharded:
            optimizer = full_optimizer_state(self.policy, self.optimizer, self.trained_names)
        else:
            optimizer = self.optimizer.state_dict()
        return {"optimizer": optimizer, "scheduler": self.scheduler.state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any], folder: Path | None = None) -> None:
        """`folder`: the checkpoint's, where an optimizer state saved in shards is."""
        optimizer = state["optimizer"]
        if "shards" in optimizer:
            if folder is None:
                raise ValueError("this learner state keeps its optimizer in shards: give the checkpoint folder")
            load_optimizer_shards(self.policy, self.optimizer, folder / optimizer["shards"])
        elif self.sharded:
            load_full_optimizer_state(self.policy, self.optimizer, optimizer, self.trained_names)
        else:
            self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.setstate(state["rng"])


class _Gap:
    """|engine log-prob - learner old log-prob| over trained tokens: the training/inference mismatch."""

    def __init__(self) -> None:
        self.total, self.count, self.max = 0.0, 0, 0.0

    def add(self, batch: list[Sample], old_lp: torch.Tensor, mask: torch.Tensor) -> None:
        for k, s in enumerate(batch):
            if not s.rollout_logprobs:
                continue
            start = len(s.prompt_ids) - 1
            where = mask[k, start : start + len(s.response_ids)].bool()
            rollout = torch.tensor(s.rollout_logprobs, device=old_lp.device)
            diff = (old_lp[k, start : start + len(s.response_ids)] - rollout).abs()[where]
            if diff.numel():
                self.total, self.count = self.total + float(diff.sum()), self.count + diff.numel()
                self.max = max(self.max, float(diff.max()))

    def metrics(self) -> dict[str, float]:
        """Over every rank's tokens (a collective call: each rank calls it once per update)."""
        summed = all_reduce_floats({"total": self.total, "count": float(self.count)})
        top = all_reduce_floats({"max": self.max}, op="max")["max"]
        if not summed["count"]:
            return {}
        return {"learner/logprob_gap_mean": summed["total"] / summed["count"], "learner/logprob_gap_max": top}


def _pad(row: torch.Tensor, width: int) -> torch.Tensor:
    """Old/reference log-probs were scored in another micro-batch: fit them to this one's width."""
    if row.shape[0] >= width:
        return row[:width]
    return torch.cat([row, torch.zeros(width - row.shape[0], device=row.device)])
