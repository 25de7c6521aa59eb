"""Mixed precision in five honest lines: which dtype, an autocast context, and a GradScaler only for fp16.

The recipe (nanoGPT's `train.py`; PyTorch "Automatic Mixed Precision" docs):

* The weights stay fp32 ("master weights"); `torch.autocast` runs the matmuls of the forward pass in a 16-bit
  dtype and keeps reductions, softmax and the loss in fp32. The optimiser updates the fp32 weights.
* bfloat16 has fp32's 8 exponent bits, so gradients do not underflow and no loss scaling is needed. T5 was
  trained in bfloat16 by its authors (Raffel et al. 2020, on TPUs).
* float16 has 5 exponent bits: small gradients underflow to 0, so `torch.amp.GradScaler` multiplies the loss by
  a large factor before `backward()`, unscales the gradients before clipping, and skips the optimiser step when it
  finds inf/NaN (then lowers the factor). T5's activations overflow fp16's range of 65,504 (transformers issues
  4586, 5651, 14189, 23918), so fp16 is offered with a warning, and only on CUDA.

Which precision `auto` means is decided by the hardware, in `choose_precision` alone. bf16 only pays where the
device computes it natively: CUDA GPUs of compute capability 8.0+ (Ampere and later;
`torch.cuda.is_bf16_supported(including_emulation=False)`), and x86 CPUs with AVX512-BF16 (a bf16 dot product
instruction; Intel Cooper Lake and later, AMD Zen 4 and later) or AMX (Intel's tile matrix unit, Sapphire Rapids
and later), as `torch.cpu._is_avx512_bf16_supported()` / `torch.cpu._is_amx_tile_supported()` report them
(cpuinfo). Elsewhere oneDNN emulates bf16 by converting to fp32 and back around every operation: correct, but a
2-step LoRA run on an AVX2-only AMD EPYC did 8 real tokens/s in bf16 against 376 in fp32, about 47x slower.
(`torch.ops.mkldnn._is_mkldnn_bf16_supported()` is not the test for "native": oneDNN answers True on any
AVX-512 CPU, where it emulates bf16 with AVX512-BW/VL/DQ.)
"""
from __future__ import annotations

import contextlib
import logging
import warnings

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP16_WARNING = (
    "--precision fp16: T5 models overflow float16 (inf/NaN activations, transformers issues 4586, 14189); "
    "expect skipped steps, and prefer bf16 where the GPU supports it"
)
EMULATED_BF16_SLOWDOWN = 47  # bf16/fp32 time of one LoRA run on an AVX2-only AMD EPYC (module docstring)


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` computes bf16 natively, the words that say why), from torch's capability queries."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, "this GPU computes bf16 natively"
        return False, "this GPU has no native bf16 (needs compute capability 8.0+)"
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return True, "this CPU has AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return True, "this CPU has AVX512-BF16"
        return False, "this CPU has no native bf16 (no AVX512-BF16/AMX)"
    return False, f"no native bf16 check for device {device.type!r}"


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, reason): `requested` ('auto', 'fp32', 'bf16' or 'fp16') made concrete for `device`.

    'auto' -> 'bf16' where the device computes bf16 natively, else 'fp32'. An explicit 'bf16' on a CPU that only
    emulates it runs, with a warning naming the slowdown; choices that cannot run (fp16 on CPU, bf16 on a GPU
    without it) raise a ValueError naming the flag."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    native, why = native_bf16(device)
    if requested == "auto":
        return ("bf16", f"bf16: {why}") if native else ("fp32", f"fp32: {why}")
    if requested == "fp32":
        return "fp32", "fp32: as requested"
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA GPU (CPU autocast has no fp16 loss scaling); "
                             "use bf16 or fp32")
        warnings.warn(FP16_WARNING, stacklevel=2)
        return "fp16", "fp16: as requested (GradScaler on; T5 may overflow)"
    if native:
        return "bf16", f"bf16: as requested; {why}"
    if device.type == "cuda":
        raise ValueError("--precision bf16: this GPU does not support bfloat16 (needs compute capability 8.0+); "
                         "use fp32, or fp16 with its overflow risk for T5")
    log.warning("--precision bf16: %s, so bf16 is emulated and runs about %dx slower than fp32 (measured on an "
                "AVX2-only CPU); use --precision fp32 or auto", why, EMULATED_BF16_SLOWDOWN)
    return "bf16", f"bf16: as requested; {why}, emulated (about {EMULATED_BF16_SLOWDOWN}x slower than fp32)"


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision alone, for callers that do not print the reason (see `choose_precision`)."""
    return choose_precision(name, device)[0]


def autocast(precision: str, device: torch.device):
    """The context the forward pass (and the loss) runs in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A real scaler for fp16; a disabled one (every call a pass-through) otherwise, so the loop has one code path."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
