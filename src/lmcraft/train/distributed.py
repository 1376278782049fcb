"""Running the one training loop on several processes, as launched by ``torchrun``.

Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op on one process, so the
loop has a single code path. Under torchrun each process takes a slice of every global batch; gradients
are summed across processes by DDP (or sharded by FSDP), so N processes with batch B take the same steps
as one process with batch N·B. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmcraft.model.transformer import store_linear_weights

MODES = ("ddp", "fsdp")


class TaskModule(nn.Module):
    """The model and a task as one module whose forward is the task's loss (or a metrics update).

    DDP and FSDP act at a module's forward; the tasks call the backbone and then a head, so wrapping both in
    one forward puts every parameter under the wrapper's gradient synchronisation and sharding.
    """

    def __init__(self, model: nn.Module, task: Any) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict[str, torch.Tensor], metrics: Any = None) -> torch.Tensor | None:
        if metrics is not None:
            metrics.update(self.model, batch)
            return None
        return self.task.loss_sum(self.model, batch)


@dataclass
class Distributed:
    """Rank, world size and device of this process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (an immutable default)
    mode: str = "ddp"

    @classmethod
    def from_env(cls, mode: str = "ddp") -> Distributed:
        """Read torchrun's environment; start the process group (NCCL on GPUs, gloo on CPUs) if needed."""
        if mode not in MODES:
            raise ValueError(f"distributed mode must be one of {', '.join(MODES)}, not {mode!r}")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank() if world > 1 else 0
        return cls(rank=rank, world=world, local_rank=local_rank, device=device, mode=mode)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def wrap(self, model: nn.Module, task: Any) -> nn.Module:
        """The module the loop calls: the model and task, under DDP or FSDP when there are several ranks."""
        model.to(self.device)
        module = TaskModule(model, task)
        if not self.active:
            return module
        sparse = [name for name, m in model.named_modules() if isinstance(m, nn.Embedding) and m.sparse]
        if sparse and (self.mode == "fsdp" or dist.get_backend() == "nccl"):
            raise ValueError(f"{sparse[0]} has sparse gradients (a tagger's n-gram table, --ngrams), which "
                             f"{'FSDP cannot shard' if self.mode == 'fsdp' else 'NCCL cannot all-reduce'}; train it "
                             "on one process, or with DDP over gloo on CPUs")
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            store_linear_weights(model, transposed=False)  # FSDP shards row-major parameters only
            for block in getattr(getattr(model, "backbone", None), "blocks", []):
                fully_shard(block)  # one block's parameters are gathered at a time
            fully_shard(module)
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # The model's only buffers are constant tables: no need to send them before every forward (the
        # option was renamed in torch 2.13).
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        # Some parameters are idle in some tasks (segment embeddings for single texts), hence the search.
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True, **no_buffer_sync)

    def no_sync(self, module: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """Skip the gradient exchange on all but the last micro-batch of an accumulated step."""
        if not self.active:
            return nullcontext()
        if self.mode == "fsdp":
            module.set_requires_gradient_sync(sync)  # type: ignore[operator]
            return nullcontext()
        return nullcontext() if sync else module.no_sync()  # type: ignore[operator]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of a few numbers over all ranks (in float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: int) -> int:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over all ranks (metric counts), returned on the tensor's own device."""
        if not self.active:
            return t
        moved = t.to(self.device)
        dist.all_reduce(moved)
        return moved.to(t.device)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (only small things: RNG states)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def shard(self, batch: list[int]) -> tuple[list[int], bool]:
        """This rank's contiguous slice of a global batch, and whether it is real. A rank whose slice is
        empty (a short last batch) gets the batch's first example with weight 0, because every rank must
        run the same number of forward and backward passes."""
        size = -(-len(batch) // self.world)
        mine = batch[self.rank * size : (self.rank + 1) * size]
        return (mine, True) if mine else (batch[:1], False)
