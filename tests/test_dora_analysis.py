"""The DoRA paper's analysis (Liu et al. 2024, section 3, Figure 2): `--snapshot-every` keeps the adapted layers'
weights at the asked steps, as the model held them, and `--mode analyse --snapshots` measures Delta M and Delta D
of each layer against the pretrained W_0 of models/baby-flan-t5 on constructed weights with known changes."""
import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import run
from lora.layer import LoRAConfig, add_lora, lora_layers
from model.load import load_pretrained
from tests.conftest import REPO
from tests.test_run_training import fails, narrow_model_dir, small_run  # noqa: F401 (fixture)
from train_loop.snapshots import save_snapshot

TARGETS = ("q", "v")
BABY_DIR = REPO / "models" / "baby-flan-t5"


def test_snapshots_appear_at_the_asked_steps_holding_what_the_model_held(tmp_path, narrow_model_dir, capsys):
    """Steps 2 and 4 of 4 with --snapshot-every 2 (not 1 or 3); each equals that step's checkpoint weights (the
    checkpoints of steps 2 and 4 are both kept): full fine-tuning's W of q and v only, DoRA's A, B and m."""
    for name, mode, extra in (("full", "full", []), ("dora", "lora", ["--lora-variant", "dora", "--lora-r", "2"])):
        out = tmp_path / name
        assert run.main(small_run(mode, narrow_model_dir, out, "--snapshot-every", "2", *extra)) == 0
        assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-00000002.safetensors",
                                                                        "step-00000004.safetensors"]
        for step in (2, 4):
            held = torch.load(out / "checkpoints" / f"step-{step:08d}.pt", weights_only=False)["weights"]
            kept = load_file(out / "snapshots" / f"step-{step:08d}.safetensors")
            assert kept and set(kept) == {k for k in held if k.rsplit(".", 2)[-2] in TARGETS}
            assert all(torch.equal(kept[k], held[k]) for k in kept)
        kinds = {k.rsplit(".", 1)[-1] for k in kept}
        assert kinds == ({"weight"} if mode == "full" else {"lora_A", "lora_B", "lora_magnitude_vector"})
    metrics = json.loads((tmp_path / "dora" / "metrics.json").read_text())
    assert metrics["snapshots"] == {"every": 2, "targets": ["q", "v"]}
    # analysed on the runs' own random W_0; one row per snapshot and layer (1+1 blocks: 3 q and 3 v)
    analysis = tmp_path / "analysis"
    assert run.main(["--mode", "analyse", "--snapshots", str(tmp_path / "full"), str(tmp_path / "dora"), "--model",
                     str(narrow_model_dir), "--random-init", "--output-dir", str(analysis)]) == 0
    rows = json.loads((analysis / "decomposition.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 6 and all(r["delta_m"] > 0 and r["delta_d"] > 0 for r in rows)
    capsys.readouterr()
    line = fails(["--mode", "analyse", "--snapshots", str(tmp_path / "dora"), "--model", str(narrow_model_dir),
                  "--output-dir", str(tmp_path / "x")], capsys)  # the run's W_0 was random, not the folder's
    assert "--random-init --seed 42" in line and "give the run's own" in line


def givens(d: int, angle: float) -> torch.Tensor:
    """The rotation by `angle` in the plane of the first two coordinates, (d, d)."""
    R = torch.eye(d)
    R[0, 0] = R[1, 1] = math.cos(angle)
    R[0, 1], R[1, 0] = -math.sin(angle), math.sin(angle)
    return R


def test_analyse_measures_known_magnitude_and_direction_changes(tmp_path):
    """On models/baby-flan-t5's pretrained W_0, per layer i: full fine-tuning's W_t = (1 + a_i) W_0 R(theta_i) has
    Delta M = a_i mean ||w|| and Delta D = (1 - cos theta_i) mean (w_0^2 + w_1^2) / ||w||^2 (closed forms), with a_i
    rising and theta_i falling over the layers: a negative correlation, as the paper's full fine-tuning; rising
    together: positive, as its LoRA. A DoRA snapshot's W_t is m (W_0 + s B A) / ||.||_c, so Delta M = mean |m - m_0|."""
    base = load_pretrained(BABY_DIR)
    names = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS]
    expected = {}
    for run_name, rising in (("against", False), ("together", True)):
        model = copy.deepcopy(base)
        for i, name in enumerate(names):
            a, theta = 0.05 * 2 ** (i % 12 / 3), 0.02 * 2 ** ((i % 12 if rising else 11 - i % 12) / 3)
            W = model.get_submodule(name).weight
            with torch.no_grad():
                W.copy_((1 + a) * W @ givens(W.shape[1], theta))
            W0 = base.get_submodule(name).weight.detach().double()
            expected[run_name, name] = (a * W0.norm(dim=1).mean().item(), (1 - math.cos(theta)) * (
                (W0[:, 0] ** 2 + W0[:, 1] ** 2) / W0.norm(dim=1) ** 2).mean().item())
        for step in (10, 20):
            save_snapshot(tmp_path / run_name, model, step, TARGETS, {"method": "full", "model": str(BABY_DIR),
                          "random_init": False, "seed": 42, "quantize_base": None, "scaling": None})
    dora = copy.deepcopy(base)
    add_lora(dora, LoRAConfig(TARGETS, r=2, alpha=4, dropout=0.0, variant="dora", init_seed=0))
    with torch.no_grad():
        for _, layer in lora_layers(dora):
            layer.lora_B.normal_(std=0.05)
            layer.lora_magnitude_vector.mul_(1.1)  # every row's length times 1.1: Delta M = 0.1 mean ||w_0||
    save_snapshot(tmp_path / "dora", dora, 30, TARGETS, {"method": "dora", "model": str(BABY_DIR), "random_init":
                  False, "seed": 42, "quantize_base": None, "scaling": 2.0})
    out = tmp_path / "analysis"
    assert run.main(["--mode", "analyse", "--snapshots", *(str(tmp_path / r) for r in ("against", "together", "dora")),
                     "--model", str(BABY_DIR), "--output-dir", str(out)]) == 0
    result = json.loads((out / "decomposition.json").read_text())
    rows = {(r["run"].rsplit("/", 1)[-1], r["step"], r["layer"]): r for r in result["rows"]}
    assert len(rows) == 2 * 2 * len(names) + len(names) and len(names) == 24  # q, v of 4 + 4 blocks (decoder: x2)
    for (run_name, name), (delta_m, delta_d) in expected.items():
        for step in (10, 20):
            row = rows[run_name, step, name]
            assert row["delta_m"] == pytest.approx(delta_m, rel=1e-4) and row["delta_d"] == pytest.approx(delta_d,
                                                                                                         rel=1e-3)
    for name in names:
        m0 = base.get_submodule(name).weight.detach().double().norm(dim=1)
        assert rows["dora", 30, name]["delta_m"] == pytest.approx(0.1 * m0.mean().item(), rel=1e-4)
    signs = {(c["run"].rsplit("/", 1)[-1], c["target"]): c["within_step"] for c in result["correlations"]}
    assert all(signs["against", t] < -0.5 and signs["together", t] > 0.5 for t in TARGETS)
    text = (out / "decomposition.md").read_text()
    assert "| against | full | q | 24 |" in text and "| together | full | 20 | v | 12 |" in text
    assert (out / "decomposition.png").stat().st_size > 5000


@pytest.mark.parametrize("argv, message", [
    (["--mode", "lora", "--snapshot-every", "-1"], "--snapshot-every -1: must be a whole number >= 1"),
    (["--mode", "analyse", "--snapshots", "{tmp}"], "no snapshots/step-*.safetensors; train the run with"),
    (["--mode", "analyse"], "or --snapshots RUN [RUN ...]"),
])
def test_bad_snapshot_flags_give_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    line = fails([*argv, "--model", str(BABY_DIR), "--output-dir", str(tmp_path / "out")], capsys)
    assert message in line
