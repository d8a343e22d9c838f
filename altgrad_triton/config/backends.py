"""Which kernels run where: the one rule that recipe validation, the builders and inference
all ask, so that a recipe, the run it trains and the evaluation of that run never disagree.

``run.backend``: ``auto`` is Triton on CUDA and the PyTorch reference elsewhere; ``torch``
is the reference everywhere; ``triton`` needs CUDA (or Triton's CPU interpreter, in tests);
``cudnn`` is PyTorch's fused LSTM op for the LSTM layers, so it needs LSTM cells and CUDA (on
a CPU it would silently measure PyTorch's CPU LSTM instead), while the synthesizer and the SG
loss take the kernel families' ``auto`` path (``kernel_backend``).

Imports neither torch nor triton at module level: recipe validation asks the rule before
either is loaded (``altgrad-suite`` and ``--help`` stay fast).
"""

from __future__ import annotations


def backend_problem(backend: str, cell: str, device: str | None = None) -> str | None:
    """Why ``backend`` cannot run a model of ``cell`` layers on a ``device`` ("cpu" or
    "cuda"; None while no device is known, as when a recipe is validated), or None when it
    can. The reason names no key: each caller prefixes its own (``run.backend``, ``backend``)."""
    if backend == "cudnn" and cell != "lstm":
        return f"'cudnn' runs LSTM layers, and model.cell is {cell!r}; use auto, triton or torch"
    if device in (None, "cuda") or backend not in ("triton", "cudnn"):
        return None
    if backend == "triton" and _interpreting():
        return None
    return (
        f"{backend!r} needs a CUDA device, and this run is on {device}; use auto (Triton on "
        "CUDA, PyTorch elsewhere) or torch"
    )


def kernel_backend(backend: str) -> str:
    """The kernel families' backend for ``run.backend``: ``cudnn`` is a choice for the LSTM
    layers only; the synthesizer and the SG loss then take the Triton kernels on CUDA."""
    return "auto" if backend == "cudnn" else backend


def _interpreting() -> bool:
    from ..kernels import interpreting  # imports torch and triton: only once a device is known

    return interpreting()
