"""Running one training process, alone or as a rank under torchrun, and what happens when
it fails: every rank stops after the same segment and leaves the process group together,
rank 0 alone says why, a rank's error names the rank, and a lost peer is one line that says
which checkpoint is complete and how to continue.

``altgrad-train`` parses and calls ``launch``; this is the failure policy behind it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.recipe import Recipe
from ..errors import UserError
from . import distributed
from .build import launch_device, launch_world
from .folder import RunFolder
from .hooks import RunHook
from .train import Trainer, TrainingStopped


def launch(
    recipe: Recipe,
    run_dir: Path,
    tag: str | None,
    dist_timeout: float | None,
    hooks: Sequence[RunHook] = (),
) -> int:
    """Train (or, with ``tag``, resume from that checkpoint) in one process or under
    torchrun; the exit code."""
    # checked before joining the process group: every rank fails at once, nothing waits
    launch_world(recipe, distributed.launched_world_size())
    timeout = distributed.timeout_seconds(dist_timeout)

    ctx = distributed.setup(launch_device(recipe), timeout)
    if not ctx.enabled:
        trainer = Trainer(recipe, run_dir, hooks=hooks)
        if tag is not None:
            trainer.restore(tag)
        trainer.fit()
        return 0
    hint = (
        f"The last complete checkpoint is in {RunFolder(run_dir).checkpoint('last')}; continue "
        f"with: torchrun ... -m altgrad_triton.cli.train --resume {run_dir}"
    )
    previous = distributed.install_sigterm_message(ctx, hint)

    def fit() -> None:  # the trainer is dropped on return, for teardown to free it
        trainer = Trainer(recipe, run_dir, dist=ctx, hooks=hooks)
        if tag is not None:
            trainer.restore(tag)
        trainer.fit()

    try:
        fit()
    except TrainingStopped as e:
        # every rank stopped after the same segment (a stop request, saved, or a
        # non-finite loss): they leave the group together as after a finished run, and
        # rank 0 alone says why
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        e.__traceback__ = None  # its frames hold the trainer, which teardown must free
        with contextlib.suppress(RuntimeError):  # a rank already gone: still say why
            distributed.teardown()
        if ctx.rank > 0:
            return e.exit_code
        raise
    except BaseException as e:
        # on the way out with a message of our own: torchrun's SIGTERM adds nothing now
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if isinstance(e, distributed.PeerFailure):
            raise
        if isinstance(e, UserError):
            raise _on_rank(e, ctx) from None
        if isinstance(e, RuntimeError) and distributed.is_comm_failure(e):
            raise distributed.peer_failure(e, ctx, hint) from None
        raise
    signal.signal(signal.SIGTERM, previous)
    distributed.teardown()
    return 0


def _on_rank(error: UserError, ctx: Any) -> UserError:
    """The same error, its message naming the rank that raised it."""
    return UserError(f"rank {ctx.rank}: {error}", exit_code=error.exit_code, label=error.label)
