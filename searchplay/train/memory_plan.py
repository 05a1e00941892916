"""A memory plan before anything loads: what each GPU holds, per role and phase, from config.json shapes alone.

The figures follow what the trainer does today (docs/scaling.md): the learner keeps fp32 master
weights, fp32 gradients and AdamW's two fp32 moments on its device (16 bytes per parameter), a KL
reference in fp32 (4), and activations of one micro-batch. A sharded learner group
(`learner.sharding`, FSDP2) holds 1/N of the weights, gradients, moments and reference on each of its
N ranks, plus the units it gathers to compute (the root's embeddings and two decoder layers, in bf16 under
learner.bf16, else fp32); with `learner.offload` the shards stay on the CPU, with `learner.offload_reference`
the reference's do. With LoRA (`learner.lora_rank`) the fp32 base is
frozen: gradients and moments exist for the adapters alone, and the reference is the base itself.
vLLM takes `model.vllm_gpu_memory` of its GPU (its bf16 weights and KV cache inside that share)
and sleeps during the update and the weight sync that follows (in a Ray rollout worker too); a
Ray rollout worker on our engine holds an fp32 copy of the policy instead (on vLLM it holds none).
A GPU's peak is the larger of its two phases: rollouts (vLLM awake, the learner's weights, moments
and reference resident) and updates (vLLM asleep, gradients and activations added).

Activations are an estimate: with gradient checkpointing each layer keeps its fp32 input for
`learner.micro_batch_tokens` tokens and one layer is recomputed at a time; without it every
layer keeps its intermediates. Logits are computed for trained positions only, at most the
micro-batch's tokens, in fp32 with their gradient. Expect the real peak within about 20% (the
allocator's fragmentation and CUDA's own context, ~0.5 GiB, come on top).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from searchplay.config import Config
from searchplay.rl.learner import resolve_sharding
from searchplay.train.gpu_layout import LayoutError, gpu_layout

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5


class PlanError(ValueError):
    """A model shape that cannot be read, or a layout that cannot be planned."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory plan needs, as a decoder-only transformer's config.json gives them."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied_embeddings: bool
    qkv_bias: bool

    @property
    def parameters(self) -> int:
        """Exact for Llama / Qwen2 / Mistral-style models (GQA attention, gated MLP, RMSNorm)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        if self.qkv_bias:
            attention += q + 2 * kv
        per_layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden


def lora_parameters(shape: ModelShape, rank: int) -> int:
    """Adapter parameters of rank `rank` on every linear layer of the decoder (attention and MLP): r x (in + out) each."""
    q, kv, h, i = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.hidden, shape.intermediate
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
    return shape.layers * rank * per_layer


def read_shape(path: Path) -> ModelShape:
    """The shape from a model directory's config.json (or the file itself)."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        c = json.loads(file.read_text())
        heads = int(c["num_attention_heads"])
        return ModelShape(
            vocab=int(c["vocab_size"]),
            hidden=int(c["hidden_size"]),
            layers=int(c["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads", heads)),
            head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
            intermediate=int(c["intermediate_size"]),
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlanError(f"{file}: not a decoder config.json with the sizes a memory plan needs ({e})") from None


@dataclass
class GpuLoad:
    """What one GPU holds: (role, item, GiB) in the rollout phase and in the update phase."""

    name: str
    rollout: list[tuple[str, str, float]] = field(default_factory=list)
    update: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(sum(g for *_, g in self.rollout), sum(g for *_, g in self.update)) + CUDA_CONTEXT_GIB

    @property
    def largest(self) -> tuple[str, str, float]:
        phase = self.rollout if sum(g for *_, g in self.rollout) >= sum(g for *_, g in self.update) else self.update
        return max(phase, key=lambda item: item[2])


@dataclass
class MemoryPlan:
    shape: ModelShape
    gpus: int
    gpu_gib: float
    loads: list[GpuLoad]
    problems: list[str] = field(default_factory=list)  # what cannot work whatever the totals (vLLM's share)

    @property
    def fits(self) -> bool:
        return not self.problems and all(load.peak <= self.gpu_gib for load in self.loads)

    def verdict(self) -> str:
        worst = max(self.loads, key=lambda load: load.peak)
        if self.problems:
            return "does not fit: " + "; ".join(self.problems)
        if self.fits:
            return f"fits: the fullest GPU ({worst.name}) peaks at {worst.peak:.1f} of {self.gpu_gib:g} GiB"
        role, item, gib = worst.largest
        return (
            f"does not fit: {worst.name} needs {worst.peak:.1f} GiB of {self.gpu_gib:g}; its largest item is the {role}'s "
            f"{item} ({gib:.1f} GiB)"
        )

    def table(self) -> str:
        lines = [
            f"{self.shape.parameters:,} parameters; {self.gpus} GPU(s) of {self.gpu_gib:g} GiB",
            "",
            "| GPU | phase | role | item | GiB |",
            "| --- | --- | --- | --- | --- |",
        ]
        for load in self.loads:
            for phase, items in (("rollouts", load.rollout), ("update", load.update)):
                for role, item, gib in items:
                    lines.append(f"| {load.name} | {phase} | {role} | {item} | {gib:.1f} |")
            lines.append(f"| {load.name} | peak | | with {CUDA_CONTEXT_GIB} GiB of CUDA context | {load.peak:.1f} |")
        lines += ["", self.verdict()]
        return "\n".join(lines)


def activation_gib(shape: ModelShape, tokens: int, checkpointing: bool) -> float:
    """Activations of one micro-batch of `tokens` tokens under bf16 autocast (module docstring)."""
    layer_work = tokens * (12 * shape.hidden + 4 * shape.intermediate) * 2  # a layer's bf16 intermediates
    kept = shape.layers * tokens * shape.hidden * 4 + layer_work if checkpointing else shape.layers * layer_work
    logits = tokens * shape.vocab * 4 * 2  # trained positions' fp32 logits and their gradient
    return (kept + logits) / GIB


def vllm_share_problem(cfg: Config, shape: ModelShape, gpu_gib: float) -> str | None:
    """Why vLLM's share of a GPU cannot serve the policy, if it cannot: the share must hold the bf16 weights and the KV
    cache of at least one sequence of model.vllm_max_model_len tokens (else rollout.max_total_tokens), or vLLM refuses
    to start however much the rest of the GPU has free."""
    share = cfg.model.vllm_gpu_memory * gpu_gib
    weights = 2 * shape.parameters / GIB
    tokens = cfg.model.vllm_max_model_len or cfg.rollout.max_total_tokens
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2 * tokens / GIB  # keys and values in bf16
    if share >= weights + kv:
        return None
    return (
        f"vLLM's share (model.vllm_gpu_memory {cfg.model.vllm_gpu_memory:g} of {gpu_gib:g} GiB = {share:.1f} GiB) cannot "
        f"hold the bf16 weights ({weights:.1f} GiB) and the KV cache of one {tokens:,}-token sequence ({kv:.2f} GiB): "
        "raise model.vllm_gpu_memory or use larger GPUs"
    )


def make_plan(cfg: Config, shape: ModelShape, gpus: int, gpu_gib: float) -> MemoryPlan:
    """Per GPU, what the trainer's layout puts there (the local backend: GPU 0; Ray: its workers)."""
    if gpus < 1 or gpu_gib <= 0:
        raise PlanError(f"a plan needs at least one GPU with memory > 0, got {gpus} GPU(s) of {gpu_gib} GiB")
    p = shape.parameters
    t = cfg.trainer
    ranks = t.learner_workers if t.backend == "ray" else 1
    sharded = resolve_sharding(cfg.learner.sharding, ranks)
    share = 0.0 if sharded and cfg.learner.offload else 1 / ranks if sharded else 1.0  # of each per-parameter item
    part = f" (1/{ranks} shard)" if sharded else ""
    weights, moments, grads = 4 * p / GIB, 8 * p / GIB, 4 * p / GIB
    reference = 4 * p / GIB if cfg.learner.kl_coef > 0 else 0.0
    lora = lora_parameters(shape, cfg.learner.lora_rank)
    base_dtype = "fp32"
    if lora:  # the base frozen: gradients and moments for the adapters alone, the reference is the base
        moments, grads, reference = 8 * lora / GIB, 4 * lora / GIB, 0.0
        if cfg.learner.lora_base_dtype == "bfloat16":
            weights, base_dtype = 2 * p / GIB, "bf16"
    acts = activation_gib(shape, cfg.learner.micro_batch_tokens, cfg.learner.gradient_checkpointing)
    vllm = cfg.model.vllm_gpu_memory * gpu_gib if cfg.model.engine == "vllm" else 0.0
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied_embeddings else 2)
    gather_bytes = 4 if cfg.learner.bf16 is False else 2  # bf16: units are gathered in bf16 (MixedPrecisionPolicy)
    gathered = gather_bytes * (embeddings + 2 * (p - embeddings) / shape.layers) / GIB  # what a rank unshards to compute
    ref_share = 0.0 if sharded and cfg.learner.offload_reference else share

    def learner(load: GpuLoad) -> None:
        resident = [
            ("learner", f"{base_dtype} {'base weights (frozen)' if lora else 'weights'}{part}", weights * share),
            ("learner", f"AdamW moments (fp32{', adapters' if lora else ''}){part}", moments * share),
        ]
        if lora:
            resident.append(("learner", f"LoRA adapters (fp32, {lora:,} parameters)", 4 * lora / GIB))
        if reference:
            where = " (offloaded: on the CPU between uses)" if ref_share == 0 and share else part
            resident.append(("learner", f"KL reference (fp32){where}", reference * ref_share))
        load.rollout += resident
        kind = "fp32" if gather_bytes == 4 else "bf16"
        working = [("learner", f"gathered for compute ({kind} embeddings + 2 layers)", gathered)] if sharded else []
        grad = [("learner", f"fp32 gradients{' (adapters)' if lora else ''}{part}", grads * share)]
        load.update += [*resident, *grad, *working, ("learner", "activations (estimate)", acts)]

    def rollout(load: GpuLoad, ray_worker: bool) -> None:
        if vllm:  # asleep during the update (and the weight sync after it) in either backend
            load.rollout.append(("rollout", f"vLLM share ({cfg.model.vllm_gpu_memory:g}: bf16 weights + KV cache)", vllm))
        elif ray_worker:  # a Ray rollout worker on our engine generates from its own fp32 policy
            load.rollout.append(("rollout", "fp32 policy copy", weights))
            load.update.append(("rollout", "fp32 policy copy", weights))

    problems = [p for p in [vllm_share_problem(cfg, shape, gpu_gib) if vllm else None] if p]
    if t.backend == "local":
        load = GpuLoad("GPU 0")
        learner(load)
        rollout(load, ray_worker=False)
        return MemoryPlan(shape, gpus, gpu_gib, [load], problems)
    try:
        layout = gpu_layout(t.learner_workers, t.rollout_workers, t.gpus_per_worker)
    except LayoutError as e:
        raise PlanError(str(e)) from None
    if len(layout) > gpus:
        raise PlanError(
            f"{t.learner_workers} learner and {t.rollout_workers} rollout workers at {t.gpus_per_worker:g} GPU each need "
            f"{len(layout)} GPUs; {gpus} given"
        )
    loads: list[GpuLoad] = []
    for k, workers in enumerate(layout):
        load = GpuLoad(f"GPU {k}")
        for kind, _ in workers:
            if kind == "learner":
                learner(load)
            else:
                rollout(load, ray_worker=True)
        loads.append(load)
    return MemoryPlan(shape, gpus, gpu_gib, loads, problems)
