"""altgrad-triton: recurrent language models trained with alternating synthetic and real
gradients, on recurrent cells and a synthetic-gradient loss written as Triton kernels.

``altgrad_triton.load_run(path)`` loads a trained run for use in your own code (see
``inference.py``); it is imported on first use, so that importing the package (as every
command does before it parses its arguments) does not import torch.
"""

from typing import Any

from ._moved import install as _install_moved_modules

_install_moved_modules()  # the flat layout's module paths still import (see _moved.py)

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from .run.inference import load_run

        return load_run
    raise AttributeError(f"module 'altgrad_triton' has no attribute {name!r}")
