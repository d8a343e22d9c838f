"""QRNN fo-pooling: c_t = f_t * c_{t-1} + (1 - f_t) * z_t,  h_t = o_t * c_t.

(Triton kernels to be added above the reference by the kernel work.)
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton


def fo_pool_reference(
    f: torch.Tensor, z: torch.Tensor, o: torch.Tensor | None, c0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch fo-pooling over time. f, z, o: [T, B, H]; c0: [B, H] or None (zeros).

    Returns (h [T, B, H], c_T [B, H]); h = c when ``o`` is None. Computes in fp32 and
    returns the inputs' dtype.
    """
    c = torch.zeros_like(f[0], dtype=torch.float32) if c0 is None else c0.float()
    cs = []
    for t in range(f.shape[0]):
        ft = f[t].float()
        c = ft * c + (1.0 - ft) * z[t].float()
        cs.append(c)
    cseq = torch.stack(cs)
    h = cseq if o is None else o.float() * cseq
    return h.to(f.dtype), c.to(f.dtype)


def fo_pool(
    f: torch.Tensor,
    z: torch.Tensor,
    o: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """QRNN fo-pooling. Shapes as in ``fo_pool_reference``; differentiable in all inputs."""
    if use_triton(backend, f, z, o, c0):
        raise NotImplementedError("Triton fo-pool kernel not yet built")
    return fo_pool_reference(f, z, o, c0)
