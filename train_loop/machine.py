"""One line that says which machine a figure was measured on: the CPU model and the features that decide its
speed here, or the GPU.

A speed figure means little without its machine: the same LoRA run is 47x slower in bf16 than in fp32 on a CPU
that only emulates bf16 (train_loop/precision.py), and close to 2x faster on one with AMX. The features named are
the ones that decide that: AVX2 and AVX-512 (the width of fp32 vector math), AVX512-BF16 and AMX (native bf16).
They come from `torch.cpu.get_capabilities()` (cpuinfo, as torch itself sees the CPU); the model name from
/proc/cpuinfo on Linux, else from cpuinfo or `platform`.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch

CPU_FEATURES = {"AVX2": "avx2", "AVX-512": "avx512_f", "AVX512-BF16": "avx512_bf16", "AMX": "amx_tile"}


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
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
