"""The pictures of an analysis (lora/analysis.py's dict): cumulative energy of each update's singular values, and
the subspace similarity heatmaps of the LoRA paper's Figure 3. Agg canvas: no display needed."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def cumulative_energy(singular_values: list[float]) -> np.ndarray:
    """Share of ||M||_F^2 held by the top k singular values, k = 1..len."""
    s2 = np.asarray(singular_values, dtype=float) ** 2
    return np.cumsum(s2) / s2.sum() if s2.sum() > 0 else np.zeros_like(s2)


def mean_curve(curves: list[np.ndarray]) -> np.ndarray:
    width = max(len(c) for c in curves)
    return np.mean([np.pad(c, (0, width - len(c)), constant_values=c[-1] if len(c) else 0) for c in curves], axis=0)


def draw_spectra(result: dict, labels: list[str], path: Path, energy: float) -> None:
    """One line per adapter (and the full update): energy in the top k directions, averaged over layers."""
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    for adapter, label in zip(result["adapters"], labels):
        curves = [cumulative_energy(e["spectrum"]["singular_values"]) for e in adapter["layers"].values()]
        ax.plot(np.arange(1, len(mean := mean_curve(curves)) + 1), mean, "o-", markersize=3, label=f"LoRA {label}")
    if "full_update" in result:
        curves = [cumulative_energy(e["singular_values"]) for e in result["full_update"].values()]
        mean = mean_curve(curves)
        ax.plot(np.arange(1, len(mean) + 1), mean, "k-", label="full fine-tuning: W_full - W_base")
    ax.axhline(energy, color="grey", linestyle="--", linewidth=1, label=f"{energy:.0%} (effective rank)")
    ax.set_xscale("log")
    ax.set_xlabel("top k singular directions of the update")
    ax.set_ylabel("share of ||delta W||_F^2 (mean over layers)")
    ax.set_title("How many directions each update uses")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)


def heatmap_layers(layers: list[str]) -> list[str]:
    """The middle layer of each target (q, v, ...): one heatmap per target, as Figure 3 has W_q and W_v."""
    by_target: dict[str, list[str]] = {}
    for name in layers:
        by_target.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    return [names[len(names) // 2] for names in by_target.values()][:4]


def draw_similarity(pair: dict, label_a: str, label_b: str, path: Path) -> list[str]:
    """Heatmaps of phi(a, b, i, j) (i down, j across) for the chosen layers; returns those layers."""
    chosen = heatmap_layers(list(pair["layers"]))
    fig = _figure((3.6 * len(chosen) + 0.8, 3.4))
    axes = fig.subplots(1, len(chosen), squeeze=False)[0]
    for ax, name in zip(axes, chosen):
        phi = np.asarray(pair["layers"][name])
        image = ax.imshow(phi, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest",
                          extent=(0.5, phi.shape[1] + 0.5, phi.shape[0] + 0.5, 0.5))
        ax.set_xlabel(f"j ({label_b})")
        ax.set_ylabel(f"i ({label_a})")
        ax.set_title(name.replace("layer.", "l").replace("block.", "b"), fontsize=8)
    fig.colorbar(image, ax=list(axes), label="phi(a, b, i, j)")
    fig.savefig(path, dpi=90)
    return chosen
