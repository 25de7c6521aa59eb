"""One run on N processes: `torchrun` starts them, `torch.distributed` connects them, DDP keeps them equal.

Nothing here is a cluster layer of our own: it is the wiring between this project's loop and PyTorch's engine.

* `torchrun --nproc_per_node N run.py ...` starts N copies of run.py and gives each the environment variables
  RANK (0..N-1 over all machines), LOCAL_RANK (0.. on its machine), WORLD_SIZE (N), MASTER_ADDR and MASTER_PORT.
  `start` reads them and joins the process group: gloo on CPU, NCCL on CUDA (one GPU per process,
  cuda:LOCAL_RANK; gloo beside it for the few CPU tensors).
* Every process builds the same model (same --seed; DDP also copies rank 0's weights to the others when it wraps
  the model) and takes its share of every global batch (data.py: `batch[rank::world_size]`).
* The loss, and why each process multiplies its own by N. One process minimises L = (1/T) sum_t l_t over the T
  label tokens of an optimiser step (step.py's docstring). With N processes, process r holds the tokens S_r of
  its shares, and T = sum_r |S_r| is counted over all of them (an all-reduce of one integer). Process r
  backpropagates L_r = N * (1/T) sum_{t in S_r} l_t. DDP all-reduces the gradients and divides by N:
      (1/N) sum_r grad L_r = (1/T) sum_r sum_{t in S_r} grad l_t = grad L,
  the single-process gradient, up to the order of the floating-point additions (FSDP's reduce-scatter averages
  over N the same way). The logged loss is sum_r (1/T) sum_{t in S_r} l_t, an all-reduce sum: the
  single-process number. Dividing by each process's own token count instead would weight a token of a short
  share more than one of a long share: a different gradient.
* Gradient accumulation: the all-reduce happens once per optimiser step, during the backward of the last
  micro-batch; the earlier ones run under DDP's `no_sync()` and only add to each process's local gradients.
* Only rank 0 prints, logs and writes files; `PeerLost` turns a vanished process into one clear message.

The core (step.py, loop.py, modes/train.py) calls the methods of its `processes` argument: this module's `Parallel`
under torchrun, else loop.py's `OneProcess`, whose methods do the same for one process (each the identity). Without
torchrun there is no WORLD_SIZE > 1, and modes/train.py never imports this file.
"""
from __future__ import annotations

import os
import re
import signal
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

# How long a collective waits for a silent process before failing. Rank 0 writes files while the others wait at
# the next collective, so this must exceed the longest such write (a full flan-t5-large model: well under a minute).
TIMEOUT = timedelta(minutes=30)
LOST_PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "timed out", "Timed out",
                   "NCCL", "ProcessGroup")


class PeerLost(RuntimeError):
    """Another process of the run stopped (or stopped answering), so this one cannot go on alone."""


@dataclass(frozen=True)
class Parallel:
    """Who this process is in a run of `world_size` >= 2 processes (`start` makes it), and the collectives they share."""
    rank: int
    world_size: int
    fsdp: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, loss_sum: Callable, device: torch.device) -> nn.Module:
        """The module the loop calls for a micro-batch's loss, under DDP or FSDP (sharding.py)."""
        from train_loop.sharding import wrap

        return wrap(model, loss_sum, device, fsdp=self.fsdp)

    def gradient_sync(self, wrapped: nn.Module, enabled: bool):
        """Context for one micro-batch's forward and backward: skip the gradient all-reduce unless `enabled`."""
        if enabled:
            return nullcontext()
        if self.fsdp:
            from train_loop.sharding import no_gradient_sync

            return no_gradient_sync(wrapped)
        return wrapped.no_sync()

    # --- collectives: every process must call these at the same point, in the same order -----------------------
    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over all processes, in place (an all-reduce)."""
        dist.all_reduce(value)
        return value

    def total(self, count: int) -> int:
        """The sum of an integer over all processes (on the CPU: no device sync)."""
        return int(self.sum(torch.tensor(count, dtype=torch.int64)).item())

    def any(self, flag: bool) -> bool:
        """True when `flag` is true on some process: how all agree to stop after the same step."""
        return self.total(int(flag)) > 0

    def plain(self, t: torch.Tensor) -> torch.Tensor:
        """A plain tensor from a replicated DTensor (FSDP's gradient norm); any other tensor as it is."""
        from torch.distributed.tensor import DTensor

        return t.full_tensor() if isinstance(t, DTensor) else t

    @property
    def checkpoints(self):
        """checkpoint.py's save/load functions, as collectives of every process (dist_checkpoint.py)."""
        from train_loop.dist_checkpoint import Checkpoints

        return Checkpoints(self)

    def max(self, value: float) -> float:
        t = torch.tensor(value, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()

    def from_main(self, value_on_main):
        """Rank 0's `value_on_main` (any picklable object) on every process."""
        box = [value_on_main if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, work: Callable):
        """`work()` on rank 0 only (it may write files); its result, or its error, on every process.

        Rank 0 re-raises its own error; the others raise `PeerLost`, which run.py leaves unprinted, so a bad flag
        gives one message, not N.
        """
        result, error = None, None
        if self.main:
            try:
                result = work()
            except Exception as err:  # noqa: BLE001 - told to every process, then raised here
                error = err
        result, error_text = self.from_main((result, None if error is None else f"{type(error).__name__}: {error}"))
        if error is not None:
            raise error
        if error_text is not None:
            raise PeerLost(f"rank 0 failed: {error_text}")
        return result

    def share(self, items: list) -> list:
        """This process's share of a list (every N-th item from its rank on)."""
        return items[self.rank::self.world_size]

    def gather(self, value) -> list | None:
        """On rank 0, [value of rank 0, value of rank 1, ...] (any picklable objects); None elsewhere."""
        values = [None] * self.world_size if self.main else None
        dist.gather_object(value, values, dst=0)
        return values

    def gather_shares(self, share: list) -> list | None:
        """On rank 0, the whole list back in its order from every process's `share(items)`; None elsewhere."""
        parts = self.gather(share)
        if parts is None:
            return None
        whole = [None] * sum(len(p) for p in parts)
        for rank, part in enumerate(parts):
            whole[rank::self.world_size] = part
        return whole


def start(device: torch.device, fsdp: bool = False, timeout: timedelta = TIMEOUT) -> tuple[Parallel, torch.device]:
    """Join the run torchrun started (WORLD_SIZE > 1: modes/train.py comes here only then); returns (who, which
    device)."""
    world_size = int(os.environ["WORLD_SIZE"])
    if fsdp:
        try:
            from torch.distributed.fsdp import fully_shard  # noqa: F401
        except ImportError as err:
            raise ValueError(f"--fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6); this is torch "
                             f"{torch.__version__}") from err
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = "gloo"
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPUs; start at "
                             f"most that many processes per machine (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    if threading.current_thread() is threading.main_thread():  # Python lets only the main thread set handlers
        signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    return Parallel(rank, world_size, fsdp), device


def on_every_process(work: Callable, device: torch.device, fsdp: bool, folder: Path):
    """Join the run, `work(parallel, device)`, leave. A process lost on the way becomes one `PeerLost` that names
    the last checkpoint to resume from."""
    parallel, device = start(device, fsdp=fsdp)
    try:
        return work(parallel, device)
    except Exception as err:
        if not lost_peer(err):
            raise
        from train_loop.checkpoint import latest_checkpoint

        raise peer_lost(err, parallel.world_size, latest_checkpoint(folder) if parallel.main else None) from err
    finally:
        stop(parallel)


def stop(parallel: Parallel) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stopped_by_torchrun(signum, frame):
    """torchrun sends SIGTERM to every process when one of them fails: end with a message, not silently."""
    raise PeerLost("torchrun stopped this process (SIGTERM), which it does when another process of the run fails")


def lost_peer(err: BaseException) -> bool:
    """Whether an error says another process vanished (gloo and NCCL raise plain RuntimeErrors for that)."""
    if isinstance(err, (PeerLost, dist.DistError)):
        return True
    return isinstance(err, RuntimeError) and any(sign in str(err) for sign in LOST_PEER_SIGNS)


def peer_lost(err: BaseException, world_size: int, latest_checkpoint) -> PeerLost:
    """What rank 0 says when the run lost a process: what the backend saw, who tells more, what to do now."""
    seen = re.sub(r"^\[[^\]]*\] ", "", (str(err).strip().splitlines() or [type(err).__name__])[0])  # gloo's source line
    return PeerLost(f"the run on {world_size} processes stopped ({seen.split('. ')[0][:200]}). When another process "
                    f"failed, torchrun's report names it and shows its error. "
                    + (f"The last complete checkpoint is {latest_checkpoint}: rerun the same command with --resume "
                       f"to continue" if latest_checkpoint else "No checkpoint was written yet: rerun the same command"))
