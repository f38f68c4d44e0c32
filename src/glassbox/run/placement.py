"""Where a model runs and in what float type: the --dtype and --device rules, checked before any weight is read.

dtype `auto`: float32 when the float32 weights take at most half of the device's total memory (COMFORT), so
every model that fits runs exactly as it always did; otherwise the checkpoint's stored half type (bfloat16 or
float16), or bfloat16 for float32/quantized storage (float16 where the device cannot do bfloat16).
device `auto`: CUDA when present, then MPS, then the CPU.

A stored dtype code becomes a torch dtype through the readers' one table (`checkpoint.dtypes.torch_dtype`); the
CLI's names are torch's own attribute names (float32, bfloat16, float16), so they need no table.
"""

from __future__ import annotations

import re
from typing import Any

from glassbox.errors import BadInput

DTYPES = ("auto", "float32", "bfloat16", "float16")
HALF = ("bfloat16", "float16")
DEVICE_SYNTAX = "auto|cpu|cuda|cuda:N|mps"
COMFORT = 0.5  # auto keeps float32 while its weights take at most this share of the device's total memory
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# the smallest CUDA compute capability with native bfloat16 (Ampere); older cards emulate it slowly or not at all
CUDA_BF16 = (8, 0)


def check_names(dtype: str, device: str) -> None:
    """The spelling of both options (no torch needed): BadInput naming the option."""
    if dtype not in DTYPES:
        raise BadInput(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if not _DEVICE.fullmatch(device):
        raise BadInput(f"--device {device!r}: expected {DEVICE_SYNTAX}")


def name_of(dtype: Any) -> str:
    """torch.bfloat16 → "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def resolve_device(device: str) -> Any:
    """The option → an available torch.device; BadInput (before anything loads) when it is not here."""
    import torch

    check_names("auto", device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: this machine has no CUDA device torch can use "
                           f"(torch {torch.__version__}{'' if torch.version.cuda else ', built without CUDA'})")
        index = int(device.partition(":")[2] or torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            raise BadInput(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here "
                           f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    if device == "mps" and not _mps_available():
        raise BadInput("--device mps: this machine has no Apple MPS device torch can use")
    return torch.device(device)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def unsupported(kind: str, dtype: str, cuda_capability: tuple[int, int] | None = None,
                mps_bf16: bool = True) -> str | None:
    """Why `kind` (cpu|cuda|mps) cannot run `dtype`, or None. A pure rule, so it is tested without the device:
    CUDA needs compute capability ≥ 8.0 for bfloat16; MPS needs macOS 14 for bfloat16; the CPU does all three
    (bfloat16 natively on AMX/AVX-512-BF16, emulated elsewhere; float16 through upcasting kernels)."""
    if dtype == "bfloat16" and kind == "cuda" and cuda_capability is not None and cuda_capability < CUDA_BF16:
        major, minor = cuda_capability
        return (f"--dtype bfloat16: this CUDA device (compute capability {major}.{minor}) has no bfloat16; "
                f"use --dtype float16 or float32")
    if dtype == "bfloat16" and kind == "mps" and not mps_bf16:
        return "--dtype bfloat16: MPS has bfloat16 only from macOS 14; use --dtype float16 or float32"
    return None


def check_dtype(device: Any, dtype: str) -> None:
    """BadInput when this very device cannot run `dtype` (see `unsupported`)."""
    import torch

    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    mps_bf16 = True
    if device.type == "mps":
        mps_bf16 = bool(getattr(torch.backends.mps, "is_macos_or_newer", lambda *_: True)(14, 0))
    why = unsupported(device.type, dtype, capability, mps_bf16)
    if why:
        raise BadInput(why)


def half_for(device: Any) -> str:
    """The half type this device runs best: bfloat16 (float32's range), float16 where bfloat16 is missing."""
    return "bfloat16" if _can(device, "bfloat16") else "float16"


def _can(device: Any, dtype: str) -> bool:
    try:
        check_dtype(device, dtype)
    except BadInput:
        return False
    return True


def choose_dtype(requested: str, device: Any, n_params: int, stored: str | None, total_bytes: int) -> str:
    """The dtype to load in: `requested` unless auto (see the module docstring for auto's rule)."""
    if requested != "auto":
        check_dtype(device, requested)
        return requested
    if n_params * 4 <= COMFORT * total_bytes:
        return "float32"
    if stored in HALF and _can(device, stored):
        return stored
    return half_for(device)


def of(model: Any) -> dict[str, str]:
    """{"dtype", "device"} of a model's parameters ("bfloat16", "cuda:0"): what every JSON document records."""
    p = next(model.parameters())
    return {"dtype": name_of(p.dtype), "device": str(p.device)}


def keyed(key: dict[str, Any], dtype: str, device: str) -> dict[str, Any]:
    """A job's key (what its saved parts were computed from) with the --dtype/--device it was asked for; the
    default (auto, auto) leaves the key as it was, so parts saved before these options existed stay valid."""
    return key if (dtype, device) == ("auto", "auto") else dict(key, dtype=dtype, device=device)


def eps(dtype: str) -> float:
    """Machine epsilon of a float type (the spacing of numbers near 1)."""
    return {"float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}.get(dtype, 2.0**-23)


# The process's choice, set by the --dtype/--device options (run/options.py) and read by load_model when its
# caller names none, so every model-running command honours them without threading two arguments through each
# library call; cli.main puts "auto" back after each command. `last` is what the latest load resolved to.
_chosen = {"dtype": "auto", "device": "auto"}
last: dict[str, str] = {}


def choose(dtype: str | None = None, device: str | None = None) -> None:
    """Record the options' values for this process (checked first: BadInput for a misspelling)."""
    if dtype is not None:
        check_names(dtype, "auto")
        _chosen["dtype"] = dtype
    if device is not None:
        check_names("auto", device)
        _chosen["device"] = device


def chosen() -> tuple[str, str]:
    """(dtype, device) the options asked for ("auto" unless given)."""
    return _chosen["dtype"], _chosen["device"]


def reset() -> None:
    _chosen.update(dtype="auto", device="auto")
    last.clear()
