"""Recurrent layers whose serial part runs through the kernel families.

Each layer takes its input for a whole segment, ``x [T, B, I]``, and its carried state as a
tuple of tensors, and returns ``(h [T, B, H], new_state)``. The input projections for all
steps are one GEMM here; the serial recurrence goes to ``altgrad_triton.kernels`` with the
layer's ``backend`` ("auto" picks Triton for CUDA tensors, the PyTorch reference on the
CPU), so the layers and the trainer above them never branch on the backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import kernels


def drop_weight(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """DropConnect on a weight matrix (AWD-LSTM's weight drop), fresh mask per call."""
    return F.dropout(weight, p, training) if p > 0 else weight


def at_least_fp32(c: torch.Tensor) -> torch.Tensor:
    """A carried cell state in fp32, or float64 when it is float64 (a probe's exact run):
    ``.float()`` would round a float64 state to fp32 at every segment."""
    return c.to(torch.promote_types(c.dtype, torch.float32))


class QRNN(nn.Module):
    """Quasi-recurrent layer (Bradbury et al. 2016) with fo-pooling.

    Z, F, O = tanh/sigmoid/sigmoid of a linear map over the current input and, with
    ``window=2``, the previous one; then c_t = f_t c_{t-1} + (1 - f_t) z_t, h_t = o_t c_t.
    The map is one GEMM; its [T, B, 3H] output goes to the fo-pool kernel as it is, which
    applies the activations itself and returns the whole projection's gradient.
    State: ``(c,)`` or, with ``window=2``, ``(c, x_last)`` where x_last is the last input of
    the previous segment (it feeds the first step's window). c is fp32 whatever the compute
    dtype: under bf16 autocast it would otherwise be rounded at every segment boundary.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        window: int = 1,
        output_gate: bool = True,
        weight_drop: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {window}")
        self.input_size, self.hidden_size, self.window = input_size, hidden_size, window
        self.output_gate, self.weight_drop, self.backend = output_gate, weight_drop, backend
        gates = 3 if output_gate else 2
        self.linear = nn.Linear(window * input_size, gates * hidden_size)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple:
        c = torch.zeros(batch_size, self.hidden_size, device=device)
        if self.window == 1:
            return (c,)
        return (c, torch.zeros(batch_size, self.input_size, device=device))

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        inp = x
        if self.window == 2:
            x_last = rearrange(state[1], "batch feature -> 1 batch feature")  # one time step
            shifted = torch.cat([x_last.to(x.dtype), x[:-1]], dim=0)
            inp = torch.cat([x, shifted], dim=-1)
        weight = drop_weight(self.linear.weight, self.weight_drop, self.training)
        gates = F.linear(inp, weight, self.linear.bias)  # pre-activations Z | F (| O)
        # c stays fp32 across segments; only the per-step storage is the compute dtype
        h, c = kernels.fo_pool(
            gates, at_least_fp32(state[0]), output_gate=self.output_gate, backend=self.backend
        )
        return h, ((c,) if self.window == 1 else (c, x[-1]))


class LSTM(nn.Module):
    """LSTM layer: one GEMM for the input projection, the recurrence through the kernels.

    Gate order i, f, g, o (PyTorch's). Weight drop applies to W_hh. State: ``(h, c)``,
    c in fp32 whatever the compute dtype (as the kernel keeps it between steps).
    ``backend``: "auto", "torch" or "triton" pick the kernel family's path;
    "cudnn" runs the recurrence through PyTorch's fused LSTM op instead (cuDNN on CUDA).
    ``launch``: how the Triton kernels launch their time steps (``kernels.lstm.LAUNCH_MODES``;
    None: the tuned choice, else one launch per step); every mode computes the same bits.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        weight_drop: float = 0.0,
        backend: str = "auto",
        launch: str | None = None,
    ):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_drop, self.backend, self.launch = weight_drop, backend, launch
        self.w_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.w_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in (self.w_ih, self.w_hh, self.bias):
            nn.init.uniform_(p, -bound, bound)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple:
        return tuple(torch.zeros(batch_size, self.hidden_size, device=device) for _ in range(2))

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        if self.backend == "cudnn":
            return self._fused_forward(x, state)
        gx = F.linear(x, self.w_ih, self.bias)
        w_hh = drop_weight(self.w_hh, self.weight_drop, self.training).to(gx.dtype)
        # h feeds a matmul, so it takes the compute dtype; c stays fp32 across segments
        h0, c0 = state[0].to(gx.dtype), at_least_fp32(state[1])
        hs, h, c = kernels.lstm_segment(gx, w_hh, h0, c0, backend=self.backend, launch=self.launch)
        return hs, (h, c)

    def _fused_forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """``backend="cudnn"``: PyTorch's fused LSTM op (``aten::lstm``), which runs cuDNN on
        CUDA, with AWD-LSTM's weight drop applied to W_hh before the call, as awd-lstm-lm
        does with ``nn.LSTM``. It is the baseline a user would otherwise pick, and the
        fastest path wherever the Triton kernel loses.

        Under autocast every operand is cast to the autocast dtype (cuDNN takes one dtype),
        so c is carried in that dtype through the segment, unlike the other backends; it is
        returned as fp32 for the carried state all the same. The single bias goes in as
        b_ih, with b_hh zero.
        """
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        w_hh = drop_weight(self.w_hh, self.weight_drop, self.training)
        weights = [w.to(dtype) for w in (self.w_ih, w_hh, self.bias)]
        weights.append(torch.zeros_like(weights[2]))
        hx = [state[0][None].to(dtype), state[1][None].to(dtype)]
        with torch.autocast(dev, enabled=False):
            hs, h, c = torch.ops.aten.lstm.input(
                x.to(dtype), hx, weights, True, 1, 0.0, self.training, False, False
            )
        return hs, (h[0], c[0].float())
