"""The adapter a real `run.py --mode lora` saves on CPU records what was trained: every LoRA flag, even though
the CPU speed-ups swap LoRA's nn.Dropout for another module (train_loop/cpu_speed.py), and a base model peft can
find again: the hub id as given, a local folder as an absolute path."""
import json

import torch

import run
from lora.layer import LoRAConfig, add_lora, lora_layers
from tests.conftest import DATA_DIR, SMALL_DIR
from tests.train_helpers import tiny_model
from modes.train import save_model
from modes.train_config import config_from_args
from train_loop.cpu_speed import use_cpu_kernels


def test_a_cpu_lora_run_saves_the_flags_it_trained_with(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(SMALL_DIR.parent)  # the model given as a relative folder name
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # a CPU that emulates bf16 (fake),
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # so auto means fp32 anywhere
    out = tmp_path / "lora"
    argv = ["--mode", "lora", "--model", SMALL_DIR.name, "--random-init", "--data", str(DATA_DIR),
            "--max-train-samples", "16", "--max-steps", "2", "--max-eval-samples", "2", "--max-val-samples", "2",
            "--max-new-tokens", "4", "--batch-size", "4", "--max-input-tokens", "64", "--max-target-tokens", "24",
            "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--lora-targets", "q,k,v", "--rslora",
            "--device", "cpu", "--precision", "auto", "--output-dir", str(out)]
    assert run.main(argv) == 0
    reason = "fp32: this CPU has no native bf16 (no AVX512-BF16/AMX)"
    assert reason in capsys.readouterr().out  # the start line says which precision and why
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"], config["use_rslora"]) == (4, 8, 0.1, True)
    assert config["target_modules"] == ["k", "q", "v"]
    assert config["base_model_name_or_path"] == str(SMALL_DIR.resolve())  # absolute, not "flan-t5-small"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["precision"] == "fp32" and metrics["precision_reason"] == reason
    assert metrics["machine"].startswith("CPU ")


def test_the_dropout_survives_the_cpu_swap_and_a_hub_id_is_kept_as_given(tmp_path):
    model = tiny_model()
    add_lora(model, LoRAConfig(targets=("q", "v"), r=2, alpha=4, dropout=0.05))
    assert use_cpu_kernels(model, torch.device("cpu"))["dropout"] > 0
    assert not any(isinstance(layer.dropout, torch.nn.Dropout) for _, layer in lora_layers(model))  # swapped
    config = config_from_args(run.build_parser().parse_args(["--mode", "lora", "--model", "google/flan-t5-small"]))
    save_model(model, None, tmp_path, config)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.05
    assert config["base_model_name_or_path"] == "google/flan-t5-small"
