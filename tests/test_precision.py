"""The precision rule (model/device.py) on every kind of hardware the project meets, faked through torch's
own capability queries, since no one machine has them all: 'auto' is bf16 only where bf16 is native, an explicit
bf16 on a CPU that emulates it runs with a warning naming the slowdown, impossible choices raise naming the flag."""
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch

from model import device as P
from model.device import cpu_features, describe_machine

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake(monkeypatch, *, gpu_bf16=False, amx=False, avx512_bf16=False):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


HARDWARE = {  # name: (device, fake capabilities, what 'auto' picks, words its reason must hold)
    "CUDA with bf16": (CUDA, dict(gpu_bf16=True), "bf16", "GPU computes bf16 natively"),
    "CUDA without bf16": (CUDA, dict(gpu_bf16=False), "fp32", "GPU has no native bf16"),
    "CPU with AMX": (CPU, dict(amx=True, avx512_bf16=True), "bf16", "CPU has AMX"),
    "CPU with AVX512-BF16": (CPU, dict(avx512_bf16=True), "bf16", "CPU has AVX512-BF16"),
    "CPU with AVX2 only": (CPU, dict(), "fp32", "CPU has no native bf16 (no AVX512-BF16/AMX)"),
}


@pytest.mark.parametrize("hardware", HARDWARE)
def test_auto_is_bf16_only_where_bf16_is_native(hardware, monkeypatch):
    device, capabilities, expected, words = HARDWARE[hardware]
    fake(monkeypatch, **capabilities)
    precision, reason = P.choose_precision("auto", device)
    assert precision == expected
    assert reason.startswith(f"{expected}: ") and words in reason


@pytest.mark.parametrize("hardware", HARDWARE)
def test_explicit_fp32_is_taken_everywhere(hardware, monkeypatch):
    device, capabilities, _, _ = HARDWARE[hardware]
    fake(monkeypatch, **capabilities)
    assert P.choose_precision("fp32", device) == ("fp32", "fp32: as requested")


@pytest.mark.parametrize("hardware", HARDWARE)
def test_explicit_bf16_runs_where_it_can_and_warns_where_it_is_emulated(hardware, monkeypatch, caplog):
    device, capabilities, auto, words = HARDWARE[hardware]
    fake(monkeypatch, **capabilities)
    if hardware == "CUDA without bf16":
        with pytest.raises(ValueError, match="--precision bf16: this GPU does not support bfloat16"):
            P.choose_precision("bf16", device)
        return
    with caplog.at_level(logging.WARNING, logger="model.device"):
        precision, reason = P.choose_precision("bf16", device)
    assert precision == "bf16" and words in reason
    emulated = auto == "fp32"  # the CPU with AVX2 only
    assert ("47x slower" in caplog.text) == emulated
    assert ("emulated (about 47x slower than fp32)" in reason) == emulated


@pytest.mark.parametrize("hardware", HARDWARE)
def test_explicit_fp16_runs_on_cuda_with_its_warning_and_is_refused_on_cpu(hardware, monkeypatch):
    device, capabilities, _, _ = HARDWARE[hardware]
    fake(monkeypatch, **capabilities)
    if device.type == "cpu":
        with pytest.raises(ValueError, match="--precision fp16 needs a CUDA GPU"):
            P.choose_precision("fp16", device)
        return
    with pytest.warns(UserWarning, match="T5 models overflow float16"):
        assert P.choose_precision("fp16", device)[0] == "fp16"


def test_an_unknown_precision_names_the_flag():
    with pytest.raises(ValueError, match="--precision 'fp8'"):
        P.choose_precision("fp8", CPU)


def test_the_native_cuda_query_does_not_count_emulation(monkeypatch):
    """torch.cuda.is_bf16_supported() says True on pre-Ampere GPUs that emulate bf16; the rule must ask without it."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert P.choose_precision("auto", CUDA)[0] == "fp32"


def test_auto_on_a_cpu_without_native_bf16_is_fp32_without_a_warning(monkeypatch):
    fake(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.choose_precision("auto", CPU)[0] == "fp32"


def test_the_machine_is_described_by_model_and_features(monkeypatch):
    line = describe_machine("cpu")
    assert line.startswith("CPU ") and "threads" in line
    info = Path("/proc/cpuinfo").read_text()
    family, model = (re.search(rf"^{key}\s*:\s*(\d+)", info, re.M).group(1) for key in ("cpu family", "model"))
    assert f"(family {family}, model {model})" in line  # as lscpu prints them: the numbers that tell CPUs apart
    for feature in ("AVX2", "AVX-512", "AVX512-BF16", "AMX"):
        assert feature in line  # each one, under "has" or "lacks"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "amx_tile": True})
    assert cpu_features() == {"AVX2": True, "AVX-512": False, "AVX512-BF16": False, "AMX": True}
    assert "has AVX2, AMX; lacks AVX-512, AVX512-BF16" in describe_machine("cpu")


def test_a_prompting_run_records_its_precision_and_why(tmp_path, monkeypatch, caplog):
    import json

    import run
    from tests.conftest import DATA_DIR, SMALL_DIR

    fake(monkeypatch)  # a CPU with AVX2 only
    out = tmp_path / "zero-shot"
    with caplog.at_level(logging.INFO):
        assert run.main(["--mode", "zero-shot", "--model", str(SMALL_DIR), "--random-init", "--data", str(DATA_DIR),
                         "--max-eval-samples", "2", "--max-new-tokens", "2", "--device", "cpu",
                         "--output-dir", str(out)]) == 0
    reason = "fp32: this CPU has no native bf16 (no AVX512-BF16/AMX)"
    assert reason in caplog.text  # the start line
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["precision"], metrics["precision_reason"]) == ("fp32", reason)
    assert metrics["machine"].startswith("CPU ")
