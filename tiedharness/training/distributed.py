"""One run across several processes: torch.distributed as torchrun or SLURM starts it.

`torchrun --nproc_per_node=N` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in the
environment; under Hydra's submitit launcher with `tasks_per_node=N`, submitit's
`TorchDistributedEnvironment` reads the same from SLURM's. `init_distributed` joins the
process group (NCCL on GPUs, gloo on CPU) and returns who this process is; with one
process it does nothing. Every rank trains; only rank 0 writes (run.json, history,
checkpoints, W&B). Decisions that must agree (stop on a signal, the wall-clock budget)
go through `agree`, on a gloo group, so that a GPU run never waits on the device for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    control: object = None  # a gloo process group for host-side decisions

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag true on any rank is true on every rank (one small all-reduce)."""
        if not self.active:
            return list(flags)
        votes = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(v) for v in votes.tolist()]

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over ranks (validation loss sums, token and character counts)."""
        if not self.active:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_distributed() -> bool:
    """Whether this process is one of several of one run (torchrun, or SLURM tasks)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or _slurm_tasks() > 1


def _slurm_tasks() -> int:
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1") or 1)


def init_distributed(device_name: str) -> Dist:
    """Join the run's process group, if it has more than one process."""
    if not launched_distributed():
        return Dist()
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    control = dist.new_group(backend="gloo") if use_cuda else None
    return Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=local_rank,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        control=control,
    )


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(
    model: torch.nn.Module, fsdp: bool, group: Dist, device: torch.device
) -> torch.nn.Module:
    """DDP over the process group: one gradient all-reduce per step, each tied tensor
    reduced once (it is one parameter). Or FSDP2, sharded in place. Without a process
    group, the model itself."""
    if fsdp:
        if not group.active:
            raise ValueError(
                "trainer.fsdp=true shards over the ranks of a process group: launch the "
                "run with torchrun (or SLURM tasks), or set trainer.fsdp=false"
            )
        from tiedharness.training.sharding import fully_shard_model

        return fully_shard_model(model)
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
