"""analysis.json, analysis.md and figures from lora/analysis.py's dict: the LoRA paper's section 7 as a report.

Tables average over the layers of each target (the last name component: q, v, ...); analysis.json keeps every
layer. Random weights (`random_init`) are stated at the top: the numbers then describe the method, not FLAN-T5.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from eval.analysis_figures import draw_similarity, draw_spectra


def by_target(layers: dict) -> dict[str, list]:
    groups: dict[str, list] = {}
    for name, entry in layers.items():
        groups.setdefault(name.rsplit(".", 1)[-1], []).append(entry)
    return groups


def labels_of(result: dict) -> list[str]:
    """Short names: the folder (its parent when it is a run folder's `adapter/`), and the rank."""
    names = []
    for a in result["adapters"]:
        path = Path(a["dir"])
        name = path.parent.name if path.name == "adapter" else path.name
        names.append(name if name == f"r{a['r']}" else f"{name} (r={a['r']})")
    return names


def spectrum_lines(result: dict, labels: list[str]) -> list[str]:
    lines = ["| adapter | target | layers | rank of delta W | effective rank | top direction's share | "
             "mean \\|\\|delta W\\|\\|_F |", "|" + " --- |" * 7]
    for adapter, label in zip(result["adapters"], labels):
        for target, entries in by_target(adapter["layers"]).items():
            spectra = [e["spectrum"] for e in entries]
            top = mean(s["singular_values"][0] ** 2 / max(s["frobenius_norm"] ** 2, 1e-300) for s in spectra)
            lines.append(f"| {label} | {target} | {len(entries)} | {mean(s['rank'] for s in spectra):.1f} of "
                         f"{adapter['r']} | {mean(s['effective_rank'] for s in spectra):.2f} | {top:.1%} | "
                         f"{mean(s['frobenius_norm'] for s in spectra):.4g} |")
    return lines


def table7_lines(result: dict, labels: list[str]) -> list[str]:
    lines = ["| adapter | target | \\|\\|U^T W V^T\\|\\| on delta W's top-r | on W's top-r | on random | "
             "\\|\\|W\\|\\|_F | \\|\\|delta W\\|\\|_F | amplification |", "|" + " --- |" * 8]
    for adapter, label in zip(result["adapters"], labels):
        for target, entries in by_target(adapter["layers"]).items():
            rows = [e["table7"] for e in entries]
            cells = [mean(r[key] for r in rows) for key in ("w_on_delta_directions", "w_on_own_directions",
                                                             "w_on_random_directions", "w_norm", "delta_norm",
                                                             "amplification")]
            lines.append(f"| {label} | {target} | " + " | ".join(f"{c:.4g}" for c in cells) + " |")
    return lines


def phi_cells(phis: list) -> list[float]:
    """phi(1, 1), phi(r_a, r_b) and the mean over all (i, j), each averaged over the layers given."""
    return [mean(p[0][0] for p in phis), mean(p[-1][-1] for p in phis),
            mean(mean(v for row in p for v in row) for p in phis)]


def similarity_lines(result: dict, labels: dict[str, str], out_dir: Path) -> list[str]:
    lines = []
    for k, pair in enumerate(result["subspace_similarity"]):
        la, lb = labels[pair["a"]], labels[pair["b"]]
        if not pair["layers"]:
            lines += [f"### {la} vs {lb}", "", "No layer is adapted by both.", ""]
            continue
        png = f"subspace_{k}.png"
        chosen = draw_similarity(pair, la, lb, out_dir / png)
        init = by_target(pair["init"]) if "init" in pair else {}
        lines += [f"### {la} vs {lb}", "", f"![phi for {la} and {lb}]({png})", "",
                  f"Heatmaps: {', '.join(f'`{c}`' for c in chosen)}. Mean over the layers of each target. "
                  "'at init' is phi of the two A's as they were drawn, before training (redrawn from each run's "
                  "recorded `lora.init_seed`; '-' where a seed is unknown, e.g. an adapter outside a run folder): "
                  "what training learned in common is what phi adds to it. 'random' is the expectation for "
                  "independent random subspaces, max(i, j) / d_in with each target's own d_in.", "",
                  "| target | layers | phi(1, 1) | phi(r_a, r_b) | mean phi over all (i, j) | at init: phi(1, 1) | "
                  "at init: phi(r_a, r_b) | at init: mean | random: mean |", "|" + " --- |" * 9]
        for target, phis in by_target(pair["layers"]).items():
            at_init = [f"{c:.3f}" for c in phi_cells(init[target])] if target in init else ["-"] * 3
            random = mean(v for row in pair["random"][target] for v in row)
            lines.append(f"| {target} | {len(phis)} | " + " | ".join(f"{c:.3f}" for c in phi_cells(phis)) + " | "
                         + " | ".join(at_init) + f" | {random:.3f} |")
        lines.append("")
    return lines


def full_update_lines(result: dict, labels: list[str]) -> list[str]:
    full = result["full_update"]
    lines = ["| target | layers | effective rank of W_full - W_base | of at most | relative change "
             "\\|\\|W_full - W_base\\|\\| / \\|\\|W_base\\|\\| |", "|" + " --- |" * 5]
    for target, entries in by_target(full).items():
        lines.append(f"| {target} | {len(entries)} | {mean(e['effective_rank'] for e in entries):.1f} | "
                     f"{len(entries[0]['singular_values'])} | {mean(e['relative_change'] for e in entries):.3g} |")
    lines += ["", "How much of the full update lies in each LoRA update's top-r directions (share of "
              "\\|\\|W_full - W_base\\|\\|_F^2), against the most any r directions can hold and against random "
              "directions (r^2 / (d_out d_in)):", "",
              "| adapter | target | captured | best possible with r directions | random | cosine(delta W, full) |",
              "|" + " --- |" * 6]
    for adapter, label in zip(result["adapters"], labels):
        for target, entries in by_target(adapter["layers"]).items():
            caps = [e["full_update"] for e in entries if "full_update" in e]
            d_out, d_in = full[next(n for n in adapter["layers"] if n.rsplit(".", 1)[-1] == target)]["shape"]
            random = adapter["r"] ** 2 / (d_out * d_in)  # E ||U^T M V^T||^2 / ||M||^2 = (r / d_out) (r / d_in)
            lines.append(f"| {label} | {target} | {mean(c['captured'] for c in caps):.4f} | "
                         f"{mean(c['best_rank_r'] for c in caps):.4f} | ~{random:.4f} | "
                         f"{mean(c['cosine'] for c in caps):.3f} |")
    return lines


def write_analysis(result: dict, out_dir: Path) -> Path:
    """analysis.json (everything), spectrum.png, subspace_<k>.png and analysis.md; returns analysis.md's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "analysis.json").write_text(json.dumps(result) + "\n")
    labels = labels_of(result)
    draw_spectra(result, labels, out_dir / "spectrum.png", result["energy"])
    lines = ["# What the adapters learned", "", f"Base model: `{result['model']}`"
             + (f", random weights (seed {result['seed']})" if result.get("random_init") else "") + ". Adapters: "
             + ", ".join(f"`{a['dir']}` ({label}, alpha {a['alpha']}, scaling {a['scaling']:.3g}"
                         + (f", A drawn from seed {a['init_seed']}" if a.get("init_seed") is not None else "") + ")"
                         for a, label in zip(result["adapters"], labels)) + "."]
    if result.get("random_init"):
        lines += ["", "**Random weights.** W is random here, so Table 7 compares the update with directions W "
                  "does not prefer, and a short run's A is still close to its random initialisation: these "
                  "numbers show the method at work, not what LoRA learns on FLAN-T5 (see the README)."]
    lines += ["", "## Spectrum of each update (delta W = scaling B A)", "",
              f"Effective rank: the fewest singular values holding {result['energy']:.0%} of "
              "\\|\\|delta W\\|\\|_F^2. Means over the layers of each target.", "",
              *spectrum_lines(result, labels), "", "![cumulative energy of the singular values](spectrum.png)", "",
              "## Subspace similarity (Hu et al. 2021, section 7.2, equation 4, Figure 3)", "",
              "phi(a, b, i, j) = \\|\\|U_a[:, :i]^T U_b[:, :j]\\|\\|_F^2 / min(i, j), U the right-singular "
              "vectors of A: 1 where the top-i directions of a and the top-j of b share a subspace, 0 where "
              "orthogonal.", ""]
    by_dir = {a["dir"]: label for a, label in zip(result["adapters"], labels)}
    lines += similarity_lines(result, by_dir, out_dir) if result["subspace_similarity"] else \
        ["One adapter: give two or more to compare them.", ""]
    lines += ["## delta W against W (section 7.3, Table 7)", "",
              "W projected on the top-r singular directions of delta W, of W itself, and of random "
              "directions; amplification = \\|\\|delta W\\|\\|_F / \\|\\|U^T W V^T\\|\\|_F.", "",
              *table7_lines(result, labels), ""]
    if "full_update" in result:
        lines += [f"## Full fine-tuning's update (`{result['full_model']}`)", "", *full_update_lines(result, labels), ""]
    path = out_dir / "analysis.md"
    path.write_text("\n".join(lines))
    return path
