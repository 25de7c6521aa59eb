"""Mixed precision in a few honest lines (nanoGPT's `train.py`; PyTorch's "Automatic Mixed Precision" docs), which
precision `auto` means on this hardware, and one line naming the machine a figure was measured on.

* The weights stay fp32 ("master weights"); `torch.autocast` runs the forward's matmuls in 16 bits and keeps
  reductions, softmax and the loss in fp32.
* bfloat16 has fp32's 8 exponent bits: gradients do not underflow, no loss scaling. T5 was trained in it (Raffel
  et al. 2020). float16 has 5: a GradScaler multiplies the loss before `backward()`, unscales before clipping and
  skips steps with inf/NaN; T5's activations overflow fp16 (transformers issues 4586, 5651, 14189, 23918), so fp16
  is offered with a warning, on CUDA only.
* `auto` is bf16 only where the device computes it natively: CUDA compute capability 8.0+, or an x86 CPU with
  AVX512-BF16 or AMX (`torch.cpu._is_avx512_bf16_supported()` / `_is_amx_tile_supported()`). Elsewhere oneDNN
  emulates bf16 through fp32: a 2-step LoRA run on an AVX2-only AMD EPYC did 8 tokens/s in bf16 against 376 in fp32.
  (`torch.ops.mkldnn._is_mkldnn_bf16_supported()` says True on any AVX-512 CPU, emulating: not the test for native.)
"""
from __future__ import annotations

import contextlib
import logging
import platform
import warnings
from pathlib import Path

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
    return choose_precision(name, device)[0]


def autocast(precision: str, device: torch.device):
    """The context the forward pass (and the loss) runs in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A real scaler for fp16; a disabled one (every call a pass-through) otherwise, so the loop has one code path."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# ---- the machine a figure was measured on: what decides its speed here ---------------------------------------

CPU_FEATURES = {"AVX2": "avx2", "AVX-512": "avx512_f", "AVX512-BF16": "avx512_bf16", "AMX": "amx_tile"}


def cpu_model_name() -> str:
    """What lscpu prints as "Model name", with its family and model numbers (they tell CPUs with one marketing
    name apart), e.g. 'Intel(R) Xeon(R) Processor (family 6, model 207)'."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        if "model name" in info:
            numbers = f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info else ""
            return info["model name"] + numbers
    except OSError:
        pass
    return torch.cpu.get_capabilities().get("cpu_name") or platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    """{'AVX2': True, 'AVX-512': True, 'AVX512-BF16': False, 'AMX': False} for this CPU."""
    capabilities = torch.cpu.get_capabilities()
    return {name: bool(capabilities.get(key, False)) for name, key in CPU_FEATURES.items()}


def describe_machine(device: torch.device | str = "cpu") -> str:
    """E.g. 'CPU AMD EPYC, 2 threads; has AVX2, AVX-512, AVX512-BF16; lacks AMX' or 'GPU NVIDIA H200 (sm_90)'."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"GPU {torch.cuda.get_device_name(device)} (sm_{major}{minor}), torch {torch.__version__}"
    features = cpu_features()
    has = ", ".join(name for name, present in features.items() if present) or "none of them"
    lacks = ", ".join(name for name, present in features.items() if not present)
    return (f"CPU {cpu_model_name()}, {torch.get_num_threads()} threads; has {has}"
            f"{f'; lacks {lacks}' if lacks else ''}; torch {torch.__version__}")
