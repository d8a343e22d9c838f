"""Data-parallel training across GPUs and machines: torchrun, DistributedDataParallel, shares.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``), every process is one rank; :func:`setup` joins the process group
(NCCL on CUDA, one GPU per rank, ``cuda:LOCAL_RANK``; gloo on the CPU) with a timeout on
every collective. Without ``WORLD_SIZE > 1`` nothing here does anything.

How the work is split (the trainer follows this; the numbers equal a single process's):

* The token stream is batchified with the recipe's *global* batch size; rank ``r`` of
  ``W`` owns the contiguous columns ``r*B/W .. (r+1)*B/W - 1`` (:func:`share`) and carries
  its own recurrent state (and the element-wise synthesizer's carry) for those columns.
  Every rank draws the same segment lengths (a generator seeded by seed and epoch).
* The per-rank loss is its share of the *global* mean, ``mean_over_own_columns / W``, and
  the model's DDP wrapper *sums* gradients (:func:`wrap_model`): the parameter gradients are
  then the single-process ones, and so is the gradient that reaches each rank's boundary
  state, which the synthetic-gradient injection (a sum over rows) and the synthesizer's
  regression target rely on. Clipping after the all-reduce is identical on every rank.
* The synthesizer's regression loss is a mean over the rank's rows: its gradients are
  averaged over ranks (:func:`average_gradients`, hooked before its optimizer step).
* A segment's numbers (loss, synthesizer statistics) and the Ctrl-C flag travel in one
  all-reduce (:func:`mean_and_any`), so every rank stops after the same segment.
* Checkpoints gather every rank's carried state into the full-batch layout (rank order
  along the row dimension: batch rows for the model state, ``batch * state_size`` rows for
  the element-wise synthesizer's carry, both row-major in the batch row), so a resumed
  run (any world size that divides the batch) takes its rows back with :func:`share`.
"""

from __future__ import annotations

import datetime
import gc
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..core.carry import Carry, map_carry
from ..errors import UserError, one_line

TIMEOUT_ENV = "ALTGRAD_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective may wait for the other ranks before the job fails (10 minutes)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


class PeerFailure(UserError):
    """A collective failed: another rank died or stopped answering within the timeout."""

    exit_code = 1


# ---------------------------------------------------------------------------- process group


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 when not started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def timeout_seconds(value: float | None = None) -> float:
    """The collective timeout: ``value``, else ``$ALTGRAD_DIST_TIMEOUT``, else 600 s."""
    source = "--dist-timeout"
    if value is None:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_TIMEOUT_S
        source = f"${TIMEOUT_ENV}"
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{source}: must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise UserError(f"{source}: must be > 0 seconds, got {value}")
    return float(value)


def check_divisible(batch_size: int, world_size: int) -> None:
    """One-line UserError unless the training batch splits evenly over the ranks."""
    if world_size > 1 and batch_size % world_size:
        suggestion = batch_size - batch_size % world_size or world_size
        raise UserError(
            f"data.batch_size: {batch_size} does not divide by the world size {world_size} "
            f"(each rank trains an equal share of the batch columns): use a multiple of "
            f"{world_size}, e.g. data.batch_size={suggestion}"
        )


def setup(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group torchrun described; ``SINGLE`` when not launched with W > 1.

    ``device`` is what the recipe asks for (``pick_device``): on CUDA each rank takes
    ``cuda:LOCAL_RANK`` and NCCL; on the CPU gloo. NCCL's watchdog aborts a collective that
    waits past the timeout (``TORCH_NCCL_ASYNC_ERROR_HANDLING``, on by default); gloo raises.
    """
    world = launched_world_size()
    if world <= 1:
        return SINGLE
    rank, local_rank = launched_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise UserError(
                    f"local rank {local_rank} has no GPU: this node has "
                    f"{torch.cuda.device_count()}; use --nproc-per-node "
                    f"{torch.cuda.device_count()} or fewer"
                )
            cuda = torch.device("cuda", local_rank)
            torch.cuda.set_device(cuda)
            dist.init_process_group("nccl", timeout=timeout, device_id=cuda)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except (RuntimeError, ValueError) as e:  # no rendezvous variables, nobody answering
        raise PeerFailure(
            f"rank {rank}: could not join the process group of {world} ranks "
            f"at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
            f"({one_line(e, typed=False)})"
        ) from None
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, timeout_s=timeout_s)


def from_process_group() -> DistContext:
    """The context of a process group someone already set up (tests), else ``SINGLE``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return SINGLE
    timeout = DEFAULT_TIMEOUT_S
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        timeout_s=timeout,
    )


def teardown() -> None:
    """Leave the process group after a run that ended well; call it once the trainer is
    dropped.

    First a garbage collection: a dropped Trainer can still sit in a reference cycle (an
    exception's traceback frames, a method patched onto it), and then its
    DistributedDataParallel wrapper (whose reducer holds the process group and gloo's
    pending work, tensors included) lives on until the interpreter shuts down, and is
    destroyed then, when taking the GIL aborts the process ("terminate called without an
    active exception", exit -6, after a run that saved everything). Then the barrier: a
    rank that tears down while another still finishes its last collective can take that
    rank's communication threads down with it.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_for(device: torch.device, ctx: DistContext) -> torch.device:
    """The device this rank computes on: ``cuda:LOCAL_RANK`` for a CUDA run with W > 1."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The RNG seed of rank > 0 after the (identical) model initialisation: own dropout masks."""
    return (seed * 1_000_003 + rank * 7_919) % (2**63)


# ---------------------------------------------------------------------------- failures


_COMM_FAILURE = re.compile(
    r"gloo|nccl|connection (closed|reset|refused)|timed out|timeout|"
    r"pair closure|broken pipe|socket",
    re.IGNORECASE,
)


def is_comm_failure(error: BaseException) -> bool:
    """Whether an exception raised during a run means that a collective failed."""
    dist_error = getattr(dist, "DistError", ())
    if dist_error and isinstance(error, dist_error):
        return True
    return isinstance(error, RuntimeError) and bool(_COMM_FAILURE.search(str(error)))


def peer_failure(error: BaseException, ctx: DistContext, hint: str) -> PeerFailure:
    """The one-line message a rank gives when a collective failed under it."""
    return PeerFailure(
        f"rank {ctx.rank}: lost contact with the other ranks "
        f"({one_line(error, typed=False)}): another rank failed or was stopped (see its "
        f"message), or a collective waited more than {ctx.timeout_s:g} s "
        f"(--dist-timeout, ${TIMEOUT_ENV}). {hint}"
    )


def install_sigterm_message(ctx: DistContext, hint: str) -> Any:
    """On SIGTERM (torchrun ends the other ranks when one fails) say so in one line, exit.

    Returns the previous handler, for the caller to put back once it has said anything else.
    """

    def on_sigterm(signum: int, frame: Any) -> None:
        _say_terminated(ctx, hint)

    return signal.signal(signal.SIGTERM, on_sigterm)


SIGTERM_GRACE_S = 25.0
"""How long a rank may take to stop after a SIGTERM during training: torchrun's agent sends
SIGKILL 30 s after its SIGTERM, and a rank that is still alive then has said nothing."""


def exit_after_grace(ctx: DistContext, hint: str, seconds: float = SIGTERM_GRACE_S) -> None:
    """End this rank with the SIGTERM message if it has not stopped ``seconds`` from now.

    A SIGTERM during training asks the rank to finish its segment and save (a preempted
    job); when it came because another rank died, the collective that should agree on the
    stop may wait for the dead one, and this ends the rank with one line instead."""
    timer = threading.Timer(seconds, _say_terminated, (ctx, hint))
    timer.daemon = True
    timer.start()


def _say_terminated(ctx: DistContext, hint: str) -> None:
    sys.stderr.write(
        f"error: rank {ctx.rank}: terminated (SIGTERM): torchrun stops every "
        f"rank when one fails, or the job was cancelled. {hint}\n"
    )
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


# ---------------------------------------------------------------------------- shares


def share(t: torch.Tensor, ctx: DistContext, dim: int = 0) -> torch.Tensor:
    """Rank ``ctx.rank``'s contiguous ``1/W`` of ``t`` along ``dim`` (a copy)."""
    if not ctx.enabled:
        return t
    n = t.shape[dim]
    if n % ctx.world_size:
        raise UserError(
            f"cannot split {n} rows over {ctx.world_size} ranks: use a world size that divides {n}"
        )
    size = n // ctx.world_size
    return t.narrow(dim, ctx.rank * size, size).contiguous()


def columns(batched: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's batch columns of a batchified ``[steps, batch]`` split."""
    return share(batched, ctx, dim=1)


def join_rows(parts: list[Carry]) -> Carry:
    """Per-rank tensors (or tuples of them, or None) concatenated in rank order along dim 0."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0)
    return tuple(torch.cat(column, dim=0) for column in zip(*parts, strict=True))


def share_rows(full: Carry, ctx: DistContext) -> Carry:
    """Inverse of :func:`join_rows` for this rank: its rows of a tensor or tuple (or None)."""
    return map_carry(lambda t: share(t, ctx), full)


# ---------------------------------------------------------------------------- collectives


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks, in place; returns it."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def mean_and_any(
    values: list[torch.Tensor], flag: bool, ctx: DistContext
) -> tuple[list[float], bool]:
    """0-d tensors' means over ranks and whether any rank raised ``flag``, in one all-reduce
    and one host transfer; a single process gets its values and its flag back."""
    if not ctx.enabled:
        return torch.stack(values).tolist(), flag
    vec = torch.stack(values + [values[0].new_tensor(float(flag))]).double()
    *means, raised = (all_reduce_sum(vec, ctx) / ctx.world_size).tolist()
    return means, raised > 0


def broadcast(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Rank 0's ``t`` on every rank, in place; returns it."""
    if ctx.enabled:
        dist.broadcast(t, src=0)
    return t


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and buffers on every rank (after rank 0 alone loaded weights)."""
    if ctx.enabled:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's picklable ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's picklable ``obj`` (CPU tensors inside), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average ``.grad`` over ranks in one all-reduce (a missing grad counts as zeros)."""
    if not ctx.enabled:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def _sum_hook(process_group, bucket):  # no annotations: DDP checks them
    """DDP communication hook: all-reduce SUM (DDP's default divides by the world size)."""
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel whose gradients are *summed* over ranks.

    The caller scales its per-rank loss by ``1/W`` (its share of the global mean); see the
    module docstring for why the sum, not DDP's mean. ``find_unused_parameters=False``: every
    parameter takes part in every forward, and there is exactly one backward per forward.
    Returns ``model`` itself when not distributed.
    """
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=False
    )
    ddp.register_comm_hook(None, _sum_hook)
    return ddp
