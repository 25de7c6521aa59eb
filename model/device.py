"""Where the model computes: the device, the precision it computes in there (mixed precision in a few honest lines,
as nanoGPT's `train.py` and PyTorch's "Automatic Mixed Precision" docs; training and generation share the one
`autocast`), the line naming the machine a figure was measured on, and the memory a training run takes on it.

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
import re
import resource
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP16_WARNING = (
    "--precision fp16: T5 models overflow float16 (inf/NaN activations, transformers issues 4586, 14189); "
    "expect skipped steps, and prefer bf16 where the GPU supports it"
)
EMULATED_BF16_SLOWDOWN = 47  # bf16/fp32 time of one LoRA run on an AVX2-only AMD EPYC (module docstring)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


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
    """(precision, reason): `requested` made concrete for `device`. 'auto' -> 'bf16' where the device computes bf16
    natively, else 'fp32'; 'bf16' on a CPU that emulates it runs with a warning naming the slowdown; what cannot run
    (fp16 on CPU, bf16 on a GPU without it) raises a ValueError naming the flag."""
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


def autocast(precision: str, device: torch.device):
    """The context the forward pass runs in, training (with the loss) and generating alike."""
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


# ---- memory: the peak, and the ledger of where a training run's peak went (metrics.json) -------------------------
#
# Weights (LoRA still holds the whole base model), gradients and AdamW's two moments (per *trainable* parameter) are
# *computed* from the tensors after each optimiser step; the peak is *measured* (CUDA `max_memory_allocated`; CPU
# the peak resident set, Linux VmHWM); "rest" (activations, workspace) is the peak minus the three (an underestimate
# when gradients, set to None each step, are not all alive at the peak). Backpropagation into A and B still runs
# through every layer, so LoRA saves the frozen weights' gradients and optimiser state, not their activations.

def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors have held; CPU: the process's peak resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def tensor_bytes(t: torch.Tensor) -> int:
    """numel x element size of this process's part (a sharded FSDP tensor counts its local shard)."""
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:  # shared tensors (T5's tied embeddings) count once
    return sum(tensor_bytes(p) for p in model.parameters()) + sum(tensor_bytes(b) for b in model.buffers())


def cpu_bytes(field: str = "VmHWM") -> int:
    """The process's peak (VmHWM) or current (VmRSS) resident set from Linux's /proc, else getrusage's peak (KiB)."""
    status = Path("/proc/self/status")
    match = status.is_file() and re.search(rf"{field}:\s+(\d+) kB", status.read_text())
    return int(match.group(1)) * 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryLedger:
    """`with MemoryLedger(model, device) as ledger:` around the steps, then `ledger.result()` (bytes, JSON-ready)."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device
        self.optimizer_bytes = self.gradient_bytes = 0

    def _after_step(self, optimizer, *hook_args) -> None:  # AdamW's exp_avg, exp_avg_sq, step; the gradients now
        state = sum(tensor_bytes(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
        grads = sum(tensor_bytes(p.grad) for g in optimizer.param_groups for p in g["params"] if p.grad is not None)
        self.optimizer_bytes, self.gradient_bytes = max(self.optimizer_bytes, state), max(self.gradient_bytes, grads)

    def __enter__(self) -> "MemoryLedger":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            try:  # start VmHWM again from the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
                self.peak_reset = True
            except OSError:
                self.peak_reset = False
            self.before = cpu_bytes("VmRSS")
        self.hook = register_optimizer_step_post_hook(self._after_step)
        return self

    def __exit__(self, *exc) -> None:
        self.hook.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self.peak, self.reserved = cpu_bytes(), None

    def result(self) -> dict:
        weights = weight_bytes(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        gradients = self.gradient_bytes or sum(tensor_bytes(p) for p in trainable)
        cuda = self.device.type == "cuda"
        return {
            "weights_bytes": weights, "gradients_bytes": gradients, "optimizer_state_bytes": self.optimizer_bytes,
            "rest_bytes": self.peak - weights - gradients - self.optimizer_bytes, "peak_bytes": self.peak,
            "before_training_bytes": self.before, **({"peak_reserved_bytes": self.reserved} if cuda else {}),
            "trainable_params": sum(p.numel() for p in trainable),
            "total_params": sum(p.numel() for p in self.model.parameters()),
            "computed": "weights, gradients, optimiser state: numel x element size, after a step",
            "measured": ("peak: torch.cuda.max_memory_allocated over the steps" if cuda else "peak: the process's "
                         "peak resident set (VmHWM) over the steps" + ("" if self.peak_reset else ", since it started")
                         + "; rest holds the interpreter, libraries and data (before_training_bytes - weights_bytes "
                           "of it before the first step)"),
        }
