"""altgrad-triton: recurrent language models trained with alternating synthetic and real
gradients, on recurrent cells and a synthetic-gradient loss written as Triton kernels."""

__version__ = "0.1.0"
