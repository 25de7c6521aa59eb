"""The memory ledger of training runs (model/device.MemoryLedger, in metrics.json) as report lines:
a table of weights, gradients, optimiser state and the rest, and, for a full and a LoRA run side by side, where
LoRA's saving comes from and why it is smaller than the ratio of trainable parameters."""
from __future__ import annotations

PARTS = (("weights_bytes", "weights"), ("gradients_bytes", "gradients"), ("optimizer_state_bytes", "optimiser state"),
         ("rest_bytes", "rest (activations, workspace, process)"), ("peak_bytes", "peak"))


def mib(value) -> str:
    return f"{value / 2**20:,.1f} MiB" if isinstance(value, (int, float)) else "n/a"


def ledger_table(named_ledgers: list[tuple[str, dict]]) -> list[str]:
    lines = ["| run | " + " | ".join(title for _, title in PARTS) + " | peak measured by |",
             "|" + " --- |" * (len(PARTS) + 2)]
    for name, ledger in named_ledgers:
        measured = "torch.cuda" if "peak_reserved_bytes" in ledger else "peak RSS (CPU)"
        lines.append(f"| {name} | " + " | ".join(mib(ledger.get(key)) for key, _ in PARTS) + f" | {measured} |")
    return lines


def explain_saving(full: dict, lora: dict) -> str:
    """One paragraph with the two runs' numbers: what LoRA saves, what it keeps, and the resulting ratio."""
    saved = (full["gradients_bytes"] - lora["gradients_bytes"]) + (full["optimizer_state_bytes"]
                                                                    - lora["optimizer_state_bytes"])
    return (f"LoRA trains {100 * lora['trainable_params'] / full['trainable_params']:.2g}% of the parameters, yet "
            f"its peak is {100 * lora['peak_bytes'] / full['peak_bytes']:.0f}% of full fine-tuning's. It saves the "
            f"gradients and the AdamW moments of the frozen weights ({mib(saved)}: gradients "
            f"{mib(full['gradients_bytes'])} -> {mib(lora['gradients_bytes'])}, optimiser state "
            f"{mib(full['optimizer_state_bytes'])} -> {mib(lora['optimizer_state_bytes'])}), but it still holds "
            f"every weight ({mib(lora['weights_bytes'])}) and the rest ({mib(full['rest_bytes'])} -> "
            f"{mib(lora['rest_bytes'])}): the backward pass runs through every layer above the adapters, so it "
            f"keeps nearly all of full fine-tuning's activations.")


def memory_section(named_metrics: list[tuple[str, dict]]) -> list[str]:
    """Report lines for the runs whose metrics.json has a memory_ledger; none if no run has one."""
    named = [(name, m["memory_ledger"]) for name, m in named_metrics if isinstance(m.get("memory_ledger"), dict)]
    if not named:
        return []
    lines = ["## Memory", "", "Weights, gradients and optimiser state are computed from the tensors (numel x "
             "element size); the peak is measured; the rest is the peak minus the three.", "", *ledger_table(named), ""]
    modes = {m.get("mode"): m["memory_ledger"] for _, m in named_metrics if isinstance(m.get("memory_ledger"), dict)}
    if "full" in modes and "lora" in modes:
        lines += [explain_saving(modes["full"], modes["lora"]), ""]
    return lines
