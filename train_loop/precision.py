"""Mixed precision in five honest lines: which dtype, an autocast context, and a GradScaler only for fp16.

The recipe (nanoGPT's `train.py`; PyTorch "Automatic Mixed Precision" docs):

* The weights stay fp32 ("master weights"); `torch.autocast` runs the matmuls of the forward pass in a 16-bit
  dtype and keeps reductions, softmax and the loss in fp32. The optimiser updates the fp32 weights.
* bfloat16 has fp32's 8 exponent bits, so gradients do not underflow and no loss scaling is needed. T5 was
  trained in bfloat16 by its authors; it runs under autocast on CUDA GPUs that support it (Ampere and later) and
  on CPUs (fast with AVX512-BF16/AMX, correct everywhere).
* float16 has 5 exponent bits: small gradients underflow to 0, so `torch.amp.GradScaler` multiplies the loss by
  a large factor before `backward()`, unscales the gradients before clipping, and skips the optimiser step when it
  finds inf/NaN (then lowers the factor). T5's activations overflow fp16's range of 65,504 (transformers issues
  4586, 5651, 14189, 23918), so fp16 is offered with a warning, and only on CUDA.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP16_WARNING = (
    "--precision fp16: T5 models overflow float16 (inf/NaN activations, transformers issues 4586, 14189); "
    "expect skipped steps, and prefer bf16 where the GPU supports it"
)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where it is supported (CPU, CUDA with bf16), else 'fp32'. Impossible choices raise."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if name == "auto":
        return "bf16" if device.type == "cpu" or cuda_bf16 else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA GPU (CPU autocast has no fp16 loss scaling); use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise ValueError("--precision bf16: this GPU does not support bfloat16 (needs compute capability 8.0+); "
                         "use fp32, or fp16 with its overflow risk for T5")
    if name == "fp16":
        warnings.warn(FP16_WARNING, stacklevel=2)
    return name


def autocast(precision: str, device: torch.device):
    """The context the forward pass (and the loss) runs in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A real scaler for fp16; a disabled one (every call a pass-through) otherwise, so the loop has one code path."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
