"""Training strategies behind one interface: single process, DDP, FSDP2 (`fully_shard`), DeepSpeed ZeRO.

The same command runs under `torchrun --nproc_per_node N` (or `accelerate launch`): the
process group is initialised from the launcher's environment (NCCL on GPUs, gloo on CPUs).
Strategy `auto` picks DDP when more than one process is running. Checkpoints always hold
full (unsharded) weights, written by rank 0, and optimizer state: full under single, DDP and
FSDP; one partition per process under DeepSpeed (deepspeed_engine.py says why and what differs).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vinstruct.errors import VinstructError


@dataclass
class DistEnv:
    strategy: str  # single | ddp | fsdp | deepspeed
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    engine: Any = None  # strategy deepspeed: the DeepSpeedRun, once the model is prepared

    @property
    def sharded(self) -> bool:
        """No process holds the whole model (FSDP, ZeRO-3): rank-0-only evaluation is skipped."""
        return self.strategy == "fsdp" or (self.engine is not None and self.engine.sharded)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.strategy != "single"

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, value: float | int) -> float:
        """Sum a number over all processes."""
        if not self.distributed:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor)
        return tensor.item()

    @property
    def comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def setup_distributed(strategy: str) -> DistEnv:
    """Read torchrun's environment, initialise the process group when needed, pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if strategy == "auto":
        strategy = "ddp" if world_size > 1 else "single"
    if strategy == "single" and world_size > 1:
        raise VinstructError(f"strategy 'single' but {world_size} processes were started; use ddp, fsdp or "
                             "deepspeed")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if strategy != "single" and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise VinstructError(f"strategy {strategy!r} needs a launcher: run under `torchrun --nproc_per_node N`")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(strategy, rank, world_size, local_rank, device)


def teardown_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _block_classes(module: nn.Module) -> set[str]:
    """transformers models name their repeated blocks in `_no_split_modules`."""
    names: set[str] = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or [])
    return names


def wrap_model(step_module: nn.Module, env: DistEnv, cached_features: bool = False) -> nn.Module:
    """Wrap the training module for the strategy (in place for FSDP2; DeepSpeed: see prepare_engine)."""
    if env.strategy == "deepspeed":
        from vinstruct.train.deepspeed_engine import AlignedTrainStep

        return AlignedTrainStep(step_module.model, cached_features)
    if env.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        return DistributedDataParallel(step_module, device_ids=device_ids)
    if env.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        # Only the LLM's blocks get their own shard groups: every process runs them on every
        # micro-batch. The (frozen) vision tower runs only on batches with images, which differ
        # between processes, so it stays in the root group, gathered once per forward.
        llm = step_module.model.llm
        blocks = _block_classes(llm)
        for sub in list(llm.modules()):
            if type(sub).__name__ in blocks:
                fully_shard(sub, mesh=mesh)
        fully_shard(step_module, mesh=mesh)
        return step_module
    return step_module


def prepare_engine(wrapped: nn.Module, optimizer, cfg, env: DistEnv):
    """DeepSpeed: (engine, its optimizer wrapper), the run kept in env.engine; others unchanged."""
    if env.strategy != "deepspeed":
        return wrapped, optimizer
    from vinstruct.train.deepspeed_engine import prepare

    engine, engine_optimizer, env.engine = prepare(wrapped, optimizer, cfg, env.world_size)
    return engine, engine_optimizer


def backward(loss: torch.Tensor, scale: float, env: DistEnv) -> None:
    """(loss * scale).backward(); under DeepSpeed the engine's backward, which also steps at a boundary."""
    if env.engine is not None:
        env.engine.backward(loss, scale)
        return
    (loss * scale).backward()


def unwrap(wrapped: nn.Module) -> nn.Module:
    return wrapped.module if hasattr(wrapped, "module") and isinstance(wrapped.module, nn.Module) else wrapped


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, env: DistEnv, enabled: bool):
    """Skip the gradient all-reduce on accumulation steps that are not the last."""
    if env.engine is not None:
        env.engine.set_boundary(enabled)
    if env.strategy == "ddp" and not enabled:
        with wrapped.no_sync():
            yield
        return
    if env.strategy == "fsdp":
        wrapped.set_requires_gradient_sync(enabled)
    yield


def clip_gradients(wrapped: nn.Module, max_norm: float, env: DistEnv | None = None) -> float:
    if env is not None and env.engine is not None:
        return env.engine.grad_norm()  # DeepSpeed clipped inside its step (gradient_clipping)
    params = [p for p in wrapped.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)


# ---- full state for checkpoints ---------------------------------------------------------------------
def full_states(wrapped: nn.Module, optimizer, env: DistEnv) -> tuple[dict, dict]:
    """(model state dict, optimizer state dict), complete on rank 0; collective under FSDP and DeepSpeed,
    whose optimizer state is saved per process instead (None here)."""
    if env.engine is not None:
        return env.engine.full_model_state(env.is_main), None
    if env.strategy != "fsdp":
        return unwrap(wrapped).state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(wrapped, optimizer, options=options)


def load_optimizer_state(wrapped: nn.Module, optimizer, state: dict, env: DistEnv, where: str = "") -> None:
    if env.engine is not None:
        env.engine.load_optimizer_state(state, where)
        return
    if env.strategy != "fsdp":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(wrapped, optimizer, state, options=StateDictOptions(full_state_dict=True))
