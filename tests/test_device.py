"""`model.device`: checked before anything loads; CUDA placement tested only where CUDA exists (marked gpu)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from searchplay.agent.trajectory import Trajectory
from searchplay.assets.names import TINY, model_path
from searchplay.config import Config, ConfigError, LearnerConfig, load_config
from searchplay.llm.base import SamplingParams
from searchplay.llm.device import DeviceError, bind_cuda, resolve_device
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.rl.learner import Learner, Sample

ROOT = Path(__file__).resolve().parents[1]
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs the gpu tests on a GPU machine)"
)


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "cuda:0:1", ""])
def test_config_refuses_a_device_it_cannot_name(value: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.device"):
        load_config(None, [f"model.device={value}"])


def test_auto_is_cpu_here_and_cuda_without_cuda_is_a_clear_error() -> None:
    assert Config().model.device == "auto"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="sees no CUDA device; use cpu or auto"):
        resolve_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_a_ray_learner_binds_the_first_visible_gpu_with_an_explicit_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Ray each learner sees its one GPU as index 0 (CUDA_VISIBLE_DEVICES). torch's own set_device runs here;
    only the driver call below it is faked, since this machine has no GPU. The old call, set_device(cuda), raised."""
    if not torch.cuda.is_available():
        calls: list[int] = []
        monkeypatch.setattr(torch._C, "_cuda_setDevice", calls.append, raising=False)
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # what ray_learner.py did before
    assert bind_cuda(torch.device("cuda")) == torch.device("cuda", 0)
    assert bind_cuda(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert bind_cuda(torch.device("cuda:1")) == torch.device("cuda", 1)
        assert calls == [0, 1]  # the index the driver was asked for


def test_training_on_a_missing_gpu_fails_before_anything_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run),
           "--set", "model.device=cuda"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "sees no CUDA device" in out.stderr and not run.exists()


def _update_on(device: str) -> tuple[list[int], float]:
    """Greedy tokens of the tiny model on `device`, then one learner update's loss (fp32, same batch)."""
    torch.manual_seed(0)
    model, tok = load_model(model_path(TINY), "float32", device)
    engine = TransformersEngine(model, tok)
    prompt = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    gen = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8))[0]
    traj = Trajectory(prompt)
    traj.append(gen.token_ids, True, gen.logprobs)
    learner = Learner(model, LearnerConfig(lr=1e-3, kl_coef=0.0, bf16=False), pad_id=engine.pad_id)
    return gen.token_ids, learner.update([Sample.from_trajectory(traj, 1.0)])["learner/loss"]


@gpu
@needs_cuda
def test_cuda_gives_the_cpu_tokens_and_update() -> None:
    cpu_tokens, cpu_loss = _update_on("cpu")
    cuda_tokens, cuda_loss = _update_on("cuda")
    assert cuda_tokens == cpu_tokens and abs(cuda_loss - cpu_loss) < 1e-4


@gpu
@needs_cuda
def test_a_learner_group_on_gpus_reduces_cpu_metrics_and_gpu_tensors(tmp_path: Path) -> None:
    """Before: the group was plain "nccl", and the CPU-side metric sums failed with 'No backend type associated
    with device type cpu' once it had 2+ ranks; one rank with the group's real backends shows both paths."""
    import torch.distributed as dist

    from searchplay.rl.data_parallel import group_backend

    dist.init_process_group(group_backend("cuda"), init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        metrics = torch.tensor([1.5, 2.0], dtype=torch.float64)  # as all_reduce_floats sends them: on the CPU
        dist.all_reduce(metrics)  # a plain "nccl" group raises here, whatever its size
        assert metrics.tolist() == [1.5, 2.0]
        t = torch.ones(3, device="cuda")
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


def test_the_learner_groups_backends() -> None:
    from searchplay.rl.data_parallel import group_backend

    assert group_backend("cuda") == "cpu:gloo,cuda:nccl" and group_backend("cpu") == "gloo"
