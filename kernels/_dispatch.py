"""Backend choice shared by every kernel family.

A kernel family exposes one public function taking ``backend``:

* ``"torch"``  -- the plain PyTorch reference (the CPU path and the test oracle);
* ``"triton"`` -- the Triton kernels (CUDA tensors, or any tensor when
  ``TRITON_INTERPRET=1`` runs them on the CPU through Triton's interpreter);
* ``"auto"``   -- Triton for CUDA tensors, the reference otherwise.

Training on a CPU therefore never touches the interpreter unless a caller asks for it.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "torch", "triton")


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def on_gpu(tensors: tuple) -> bool:
    """Whether every given tensor is on a GPU (the fault-injection tests stand in a GPU
    here to drive ``auto`` through the Triton path under the interpreter)."""
    return all(t.is_cuda for t in tensors if t is not None)


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Decide whether a call runs its Triton kernels; raise a clear error if it cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = on_gpu(tensors)
    if backend == "torch":
        return False
    if backend == "auto":
        return on_cuda
    if not on_cuda and not interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton "
            "is imported to run the kernels on the CPU"
        )
    return True
