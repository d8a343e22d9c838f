"""fp32 is fp32: the LSTM's fp32 ``tl.dot`` uses TF32 only when
``torch.backends.cuda.matmul.allow_tf32`` is on, whatever cuDNN's switch says."""

import torch
from altgrad_triton.kernels import lstm


def test_fp32_dot_is_ieee_unless_matmul_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert lstm._dot_precision_for(torch.float32) == "ieee"
        matmul.allow_tf32 = True
        assert lstm._dot_precision_for(torch.float32) == "tf32"
        assert lstm._dot_precision_for(torch.bfloat16) == "tf32"  # exact products either way
    finally:
        matmul.allow_tf32 = before
