"""The memory ledger's computed parts are parameter counts times element sizes: weights of the whole model,
gradients and AdamW's two fp32 moments for the trainable parameters only (full vs LoRA)."""
import pytest
import torch

from lora.layer import LoRAConfig, add_lora
from model.load import build_from_config
from tests.conftest import tiny_t5_config
from model.device import MemoryLedger


def one_step(model, device=torch.device("cpu")):
    """One AdamW step on a tiny batch, under the ledger; returns its result."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(2, 128, (2, 6))
    with MemoryLedger(model, device) as ledger:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return ledger.result()


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ledger_parts_are_counts_times_element_sizes(mode):
    model = build_from_config(tiny_t5_config())
    if mode == "lora":
        add_lora(model, LoRAConfig(("q", "v"), r=4, alpha=8, dropout=0.0))
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    n_total, n_trainable = sum(p.numel() for p in params), sum(p.numel() for p in trainable)
    ledger = one_step(model)
    assert ledger["total_params"] == n_total and ledger["trainable_params"] == n_trainable
    assert ledger["weights_bytes"] == 4 * n_total  # fp32, no buffers in T5
    assert ledger["gradients_bytes"] == 4 * n_trainable
    # AdamW: exp_avg and exp_avg_sq (fp32) per trainable parameter, and one fp32 step count per tensor
    assert ledger["optimizer_state_bytes"] == 2 * 4 * n_trainable + 4 * len(trainable)
    assert ledger["peak_bytes"] > 0
    assert ledger["rest_bytes"] == ledger["peak_bytes"] - ledger["weights_bytes"] - ledger["gradients_bytes"] \
        - ledger["optimizer_state_bytes"]
    if mode == "lora":
        assert ledger["gradients_bytes"] < ledger["weights_bytes"] / 10


def test_bf16_weights_count_two_bytes():
    model = build_from_config(tiny_t5_config(), dtype=torch.bfloat16)
    ledger = one_step(model)
    n = sum(p.numel() for p in model.parameters())
    assert ledger["weights_bytes"] == 2 * n and ledger["gradients_bytes"] == 2 * n
    assert ledger["optimizer_state_bytes"] == 2 * 2 * n + 4 * len(list(model.parameters()))  # states in bf16 too


def test_report_explains_the_saving_with_the_runs_numbers():
    from eval.memory_table import memory_section

    def ledger(trainable, weights, grads, optim, rest):
        return {"trainable_params": trainable, "weights_bytes": weights, "gradients_bytes": grads,
                "optimizer_state_bytes": optim, "rest_bytes": rest, "peak_bytes": weights + grads + optim + rest}
    mib = 2**20
    full = {"mode": "full", "memory_ledger": ledger(100, 400 * mib, 400 * mib, 800 * mib, 400 * mib)}
    lora = {"mode": "lora", "memory_ledger": ledger(1, 400 * mib, 4 * mib, 8 * mib, 388 * mib)}
    lines = memory_section([("full", full), ("lora", lora), ("zero-shot", {"mode": "zero-shot"})])
    text = "\n".join(lines)
    assert lines[0] == "## Memory" and text.count("| full |") == 1 and "zero-shot" not in text
    assert "trains 1% of the parameters" in text and "its peak is 40% of full" in text
    assert "(1,188.0 MiB: gradients" in text  # (400 - 4) + (800 - 8) MiB saved
    assert memory_section([("zero-shot", {"mode": "zero-shot"})]) == []


def test_the_run_puts_the_weights_on_the_device_before_the_ledger_starts(tmp_path, monkeypatch):
    """before_training_bytes is what the device holds when the ledger starts: on CUDA it was 0, the weights still
    on the CPU. The meta device stands in for CUDA, the device's memory reading for the bytes of the tensors on it."""
    import modes.train
    import modes.train_config
    import run
    from tests.conftest import DATA_DIR
    from tests.train_helpers import narrow_model
    from model.device import weight_bytes

    class Started(Exception):
        pass

    class DeviceLedger(MemoryLedger):
        def __enter__(self):
            on_device = [t for t in [*self.model.parameters(), *self.model.buffers()] if t.device == self.device]
            seen.update(before=sum(t.numel() * t.element_size() for t in on_device), weights=weight_bytes(self.model))
            raise Started  # nothing to train on the meta device

    seen = {}
    monkeypatch.setattr(modes.train_config, "resolve_device", lambda name: torch.device("meta"))
    monkeypatch.setattr(modes.train, "MemoryLedger", DeviceLedger)
    with pytest.raises(Started):
        run.main(["--mode", "lora", "--model", str(narrow_model(tmp_path)), "--random-init", "--data", str(DATA_DIR),
                  "--max-train-samples", "4", "--max-val-samples", "4", "--batch-size", "4", "--precision", "fp32",
                  "--output-dir", str(tmp_path / "out")])
    assert seen["before"] == seen["weights"] > 0
