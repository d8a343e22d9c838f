"""The GPU architectures the kernels' configs are sized for, and the present device's limits.

Users run A100 (sm_80), A10 / RTX 30xx (sm_86), L4 / RTX 40xx (sm_89) and H100 / H200
(sm_90). What differs between them for a launch config is the shared memory one block may
use (with the opt-in every Triton kernel gets); registers are 255 per thread and 64K per
SM on all four. :data:`SUPPORTED` holds those limits; :func:`limits` gives the limits of a
named architecture, of a capability, or of a CUDA device at run time (its
``shared_memory_per_block_optin`` where torch reports it, else the table by capability).

Who asks: the config generators (``tuning.candidates(kernel, arch)``), the LSTM's
``num_stages``, the per-device ``@triton.autotune`` lists (``tuning.DeviceAutotune``) and
``altgrad-tune --check-configs``, which compiles every architecture's candidates on a CPU.

Without a GPU and without a named architecture there is no device to size for:
``limits()`` returns None and ``tuning.candidates`` then sizes for :data:`ANY`, the least
of all four (never sm_90's alone, whose configs could not all run on an sm_86).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Limits:
    """What a launch config must fit on one architecture (or one device)."""

    arch: str  # "sm_86"
    capability: tuple[int, int]
    shared_per_block: int  # bytes one block may use, with the opt-in
    registers_per_thread: int = 255
    registers_per_sm: int = 65_536
    sms: int | None = None  # streaming multiprocessors: known for a device, not an arch

    @property
    def target(self) -> int:
        """The capability as Triton's ``GPUTarget`` arch number (86 for sm_86)."""
        return self.capability[0] * 10 + self.capability[1]

    def registers_cap(self, warps: int) -> int:
        """Registers one thread of a ``warps``-warp block may hold: 255, or fewer where the
        SM's register file cannot give every thread that many (16 warps: 128)."""
        return min(self.registers_per_thread, self.registers_per_sm // (32 * warps))


def _arch(major: int, minor: int, shared: int) -> Limits:
    return Limits(f"sm_{major}{minor}", (major, minor), shared)


SUPPORTED: dict[str, Limits] = {
    lim.arch: lim
    for lim in (
        _arch(8, 0, 166_912),  # A100: 163 KB per block
        _arch(8, 6, 101_376),  # A10, RTX 30xx: 99 KB
        _arch(8, 9, 101_376),  # L4, RTX 40xx: 99 KB
        _arch(9, 0, 232_448),  # H100, H200: 227 KB
    )
}
"""Per-block limits of the architectures the configs are checked for (CUDA programming
guide, "compute capabilities": maximum shared memory per thread block with opt-in)."""

ARCHS = tuple(SUPPORTED)
"""Their names, oldest first: ("sm_80", "sm_86", "sm_89", "sm_90")."""

ANY = Limits("any supported GPU", min(lim.capability for lim in SUPPORTED.values()),
             min(lim.shared_per_block for lim in SUPPORTED.values()))  # fmt: skip
"""The least of every supported architecture's limits (the oldest capability, the smallest
shared memory): what configs are sized for when there is no GPU to size them for. Outside
the table, so every spill measured on any architecture counts against it too
(:func:`measured_failures`)."""


def known(arch: str | int | tuple[int, int]) -> Limits:
    """The table's limits of ``arch``: a name ("sm_86", "86"), a ``GPUTarget`` number (86)
    or a capability ((8, 6)); ValueError naming the supported ones otherwise."""
    if isinstance(arch, tuple):
        name = f"sm_{arch[0]}{arch[1]}"
    elif isinstance(arch, int):
        name = f"sm_{arch}"
    else:
        name = arch if arch.startswith("sm_") else f"sm_{arch}"
    if name not in SUPPORTED:
        raise ValueError(f"unknown GPU architecture {arch!r}; supported: {', '.join(ARCHS)}")
    return SUPPORTED[name]


def by_capability(capability: tuple[int, int]) -> Limits:
    """The table's limits for ``capability``; one outside the table gets the smallest
    shared memory in it (nothing there is known to fit more), named by its capability."""
    major, minor = capability
    name = f"sm_{major}{minor}"
    if name in SUPPORTED:
        return SUPPORTED[name]
    least = min(SUPPORTED.values(), key=lambda lim: lim.shared_per_block)
    return replace(least, arch=name, capability=(major, minor))


@functools.cache
def _device_limits(index: int) -> Limits:
    props = torch.cuda.get_device_properties(index)
    capability = (int(props.major), int(props.minor))
    table = by_capability(capability)
    shared = getattr(props, "shared_memory_per_block_optin", None)  # newer torch releases
    regs = getattr(props, "regs_per_multiprocessor", None)
    return replace(
        table,
        shared_per_block=int(shared) if shared else table.shared_per_block,
        registers_per_sm=int(regs) if regs else table.registers_per_sm,
        sms=int(props.multi_processor_count),
    )


def of_device(device: torch.device | str | int | None = None) -> Limits:
    """The limits of a CUDA device (default: the current one), read from the device."""
    if isinstance(device, int):
        index = device
    else:
        device = torch.device("cuda" if device is None else device)
        if device.type != "cuda":
            raise ValueError(f"not a CUDA device: {device}")
        index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_limits(index)


Where = Limits | str | int | tuple | torch.device | None
"""What a config generator may be asked for: an architecture (name, number or capability),
a device, limits already known, or None (the current CUDA device, if any)."""


def limits(where: Where = None) -> Limits | None:
    """The limits to size configs for: ``where``'s, or the current CUDA device's when it is
    None; None when it is None and no CUDA device is present, or when it is a device that
    is not a GPU (``cpu``, ``meta``): nothing to size for.

    Architecture names and capabilities are read from the table, devices from the device.
    """
    if isinstance(where, Limits):
        return where
    if isinstance(where, torch.device) or (isinstance(where, str) and not _is_arch(where)):
        device = torch.device(where)
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        return of_device(device)
    if where is None:
        return of_device() if torch.cuda.is_available() else None
    return known(where)


def _is_arch(text: str) -> bool:
    return text.startswith("sm_") or text.isdigit()


MEASURED_TRITONS = ("3.6", "3.9")
"""The Triton releases the spill tables below were measured with (CI tests both): each
bundles its own ptxas, and they spill different configs (Triton 3.9 compiles sm_8x with
CUDA 12.9's ptxas and ``--regAllocOptLevel=2``, sm_90 with CUDA 13's)."""

Measured = dict[str, dict[str, set]]
"""architecture name -> Triton "major.minor" -> the configs measured to spill there."""


@functools.cache
def triton_release() -> str:
    """The installed Triton's "major.minor" (e.g. "3.9")."""
    import triton

    return ".".join(triton.__version__.split(".")[:2])


def measured_failures(table: Measured, limits: Limits, release: str | None = None) -> set:
    """What ``table`` says spills on ``limits``' architecture with Triton ``release``
    (default: the installed one): its entry; for a release it was not measured with, what
    spilled there with any measured release. For a GPU outside the table (and ``ANY``),
    nothing was measured, so what spilled on any supported architecture (with this
    release, or with any if it was not measured) is left out."""
    release = release or triton_release()
    measured = release in MEASURED_TRITONS
    known = limits.arch in SUPPORTED
    pers = [table.get(limits.arch, {})] if known else list(table.values())
    return {c for per in pers for r, configs in per.items() if r == release or not measured
            for c in configs}  # fmt: skip
