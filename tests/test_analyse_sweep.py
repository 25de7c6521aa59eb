"""`--mode analyse` on adapters of ours and of peft (and a full fine-tune), `--mode sweep` over two ranks and its
run folders, and equal parameter budgets for target sets: through run.py, in-process, on tiny models."""
import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import run
from lora.budget import equal_budget_ranks
from lora.adapter_file import save_adapter
from lora.layer import LoRAConfig, add_lora, lora_layers
from model.load import build_from_config, build_random_init
from tests.conftest import DATA_DIR, SMALL_DIR, tiny_t5_config
from tests.test_run_training import narrow_model_dir, small_run  # noqa: F401 (fixture)

SEED = 3


@pytest.fixture
def tiny_dir(tmp_path):
    """A folder with a tiny T5's config.json and flan-t5-small's tokenizer files: --model DIR --random-init."""
    folder = tmp_path / "tiny-t5"
    tiny_t5_config().save_pretrained(folder)
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SMALL_DIR / name, folder / name)
    return folder


def trained_like(model, seed):
    """Give every LoRA layer a non-zero B, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
    return model


def test_analyse_reads_our_and_peft_adapters_and_a_full_model(tmp_path, tiny_dir):
    from peft import LoraConfig, get_peft_model

    base = build_random_init(tiny_dir, seed=SEED)
    ours_r2 = copy.deepcopy(base)
    add_lora(ours_r2, LoRAConfig(("q", "v"), r=2, alpha=4, dropout=0.0))
    save_adapter(trained_like(ours_r2, 1), tmp_path / "ours_r2")
    ours_r4 = copy.deepcopy(base)
    add_lora(ours_r4, LoRAConfig(("q", "v"), r=4, alpha=8, dropout=0.0))
    save_adapter(trained_like(ours_r4, 2), tmp_path / "ours_r4")
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                                           task_type="SEQ_2_SEQ_LM"))
    with torch.no_grad():  # peft's A = ours_r4's A, mixed by an invertible Q: the same row space
        Q = torch.randn(4, 4) + 3 * torch.eye(4)
        for name, layer in lora_layers(ours_r4):
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(Q @ layer.lora_A)
            peft_layer.lora_B["default"].weight.normal_(std=0.1)
    theirs.save_pretrained(tmp_path / "peft_r4")
    full = copy.deepcopy(base)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01 * torch.randn_like(p))
    full.save_pretrained(tmp_path / "full" / "model")  # a --mode full run folder holds model/
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(SMALL_DIR / name, tmp_path / "full" / "model" / name)

    out = tmp_path / "analysis"
    assert run.main(["--mode", "analyse", "--adapters", str(tmp_path / "ours_r2"), str(tmp_path / "ours_r4"),
                     str(tmp_path / "peft_r4"), "--full-model", str(tmp_path / "full"), "--model", str(tiny_dir),
                     "--random-init", "--seed", str(SEED), "--output-dir", str(out)]) == 0
    result = json.loads((out / "analysis.json").read_text())
    layers = ["encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.0.SelfAttention.v"]
    pairs = result["subspace_similarity"]
    assert [(p["a"], p["b"]) for p in pairs] == [(str(tmp_path / a), str(tmp_path / b)) for a, b in
                                                 [("ours_r2", "ours_r4"), ("ours_r2", "peft_r4"), ("ours_r4", "peft_r4")]]
    assert list(pairs[0]["layers"])[:2] == layers and len(pairs[0]["layers"]) == 2 * 2 + 4 * 2
    phi = pairs[2]["layers"][layers[0]]  # ours_r4 against peft's Q A: the same 4-dimensional row space
    assert len(phi) == 4 and len(phi[0]) == 4 and phi[3][3] == pytest.approx(1.0)
    assert len(pairs[0]["layers"][layers[0]]) == 2 and len(pairs[0]["layers"][layers[0]][0]) == 4
    peft_layer = result["adapters"][2]["layers"][layers[0]]
    assert peft_layer["spectrum"]["rank"] == 4 and peft_layer["table7"]["amplification"] > 0
    assert 0 < peft_layer["full_update"]["captured"] <= peft_layer["full_update"]["best_rank_r"] + 1e-12
    assert result["full_update"][layers[0]]["relative_change"] < 0.5
    text = (out / "analysis.md").read_text()
    assert "Random weights" in text and "![" in text
    for png in ("spectrum.png", "subspace_0.png", "subspace_2.png"):
        assert (out / png).stat().st_size > 1000


def test_a_full_model_of_another_base_is_refused(tmp_path, tiny_dir, capsys):
    base = build_random_init(tiny_dir, seed=SEED)
    add_lora(base, LoRAConfig(("q",), r=2, alpha=2, dropout=0.0))
    save_adapter(trained_like(base, 0), tmp_path / "a")
    other = build_random_init(tiny_dir, seed=SEED + 1)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(SMALL_DIR / "spiece.model", tmp_path / "other" / "spiece.model")
    assert run.main(["--mode", "analyse", "--adapters", str(tmp_path / "a"), "--full-model", str(tmp_path / "other"),
                     "--model", str(tiny_dir), "--random-init", "--seed", str(SEED),
                     "--output-dir", str(tmp_path / "out")]) == 2
    assert "fine-tuned from this --model" in capsys.readouterr().err


def test_equal_budget_ranks_follow_table_5():
    model = build_from_config(tiny_t5_config())
    assert equal_budget_ranks(model, ["q", "q,k", "q,k,v,o"], 8) == [8, 4, 2]
    with pytest.raises(ValueError, match="no whole rank"):
        equal_budget_ranks(model, ["q", "q,k,v"], 8)


def test_sweep_runs_are_lora_runs(tmp_path, narrow_model_dir):  # noqa: F811
    sweep, single = tmp_path / "sweep", tmp_path / "single"
    flags = small_run("sweep", narrow_model_dir, sweep, "--ranks", "1,2")
    flags[flags.index("--max-steps") + 1] = "2"
    assert run.main(flags) == 0
    lora_flags = small_run("lora", narrow_model_dir, single, "--lora-r", "1")
    lora_flags[lora_flags.index("--max-steps") + 1] = "2"
    assert run.main(lora_flags) == 0
    files = {p.relative_to(single) for p in single.rglob("*") if p.is_file()}
    for name in ("r1", "r2"):
        assert {p.relative_to(sweep / name) for p in (sweep / name).rglob("*") if p.is_file()} == files
        assert "memory_ledger" in json.loads((sweep / name / "metrics.json").read_text())
    ours, alone = (load_file(str(f / "adapter" / "adapter_model.safetensors")) for f in (sweep / "r1", single))
    assert all(torch.equal(ours[k], alone[k]) for k in alone)  # the same training as --mode lora
    assert json.loads((sweep / "r2" / "adapter" / "adapter_config.json").read_text())["r"] == 2
    text = (sweep / "sweep.md").read_text()
    assert "| [r1](r1/metrics.json) | 1 |" in text and (sweep / "sweep.png").stat().st_size > 1000
    pair = json.loads((sweep / "analysis" / "analysis.json").read_text())["subspace_similarity"]
    assert len(pair) == 1 and pair[0]["r_a"] == 1 and pair[0]["r_b"] == 2


def test_target_set_sweep_spends_one_budget(tmp_path, narrow_model_dir):  # noqa: F811
    sweep = tmp_path / "sweep"
    flags = small_run("sweep", narrow_model_dir, sweep, "--target-sets", "q;q,v", "--lora-r", "2",
                      "--max-eval-samples", "1")
    flags[flags.index("--max-steps") + 1] = "1"
    assert run.main(flags) == 0
    metrics = [json.loads((sweep / name / "metrics.json").read_text()) for name in ("q", "q,v")]
    assert [m["lora"]["r"] for m in metrics] == [2, 1] and [m["lora"]["targets"] for m in metrics] == [["q"], ["q", "v"]]
    assert metrics[0]["trainable_params"] == metrics[1]["trainable_params"]  # the paper's Table 5: equal budgets
    pairs = json.loads((sweep / "analysis" / "analysis.json").read_text())["subspace_similarity"]
    assert [p["a"] for p in pairs] == [str(sweep / "q" / "adapter")]
    assert all(name.endswith(".q") for name in pairs[0]["layers"])  # only the layers both adapt


def test_analyse_names_a_run_folder_as_given(tmp_path, tiny_dir):
    base = build_random_init(tiny_dir, seed=SEED)
    add_lora(base, LoRAConfig(("q",), r=2, alpha=2, dropout=0.0))
    for name in ("one", "two"):
        save_adapter(trained_like(base, len(name)), tmp_path / name / "adapter")
    out = tmp_path / "out"
    assert run.main(["--mode", "analyse", "--adapters", str(tmp_path / "one"), str(tmp_path / "two"), "--model",
                     str(tiny_dir), "--random-init", "--seed", str(SEED), "--output-dir", str(out)]) == 0
    pair = json.loads((out / "analysis.json").read_text())["subspace_similarity"][0]
    assert (pair["a"], pair["b"]) == (str(tmp_path / "one"), str(tmp_path / "two"))


def test_sweep_runs_start_from_independent_initialisations(tmp_path, narrow_model_dir):  # noqa: F811
    """Hu et al. 2021, section 7.2 compare independently trained adapters. Drawn after one reseed, the first layer's
    A of r=2 would be the first 2 rows of A of r=4, and phi(2, 4) = 1 there before any training: each sweep run draws
    A from its own recorded seed, and the report gives phi of the two initial A's as the baseline to beat."""
    sweep = tmp_path / "sweep"
    flags = small_run("sweep", narrow_model_dir, sweep, "--ranks", "2,4", "--max-eval-samples", "1")
    flags[flags.index("--max-steps") + 1] = "1"
    assert run.main(flags) == 0
    seeds = [json.loads((sweep / name / "metrics.json").read_text())["lora"]["init_seed"] for name in ("r2", "r4")]
    assert seeds[0] == 42 and seeds[1] != seeds[0]  # the first run is the plain --mode lora run of --seed 42
    pair = json.loads((sweep / "analysis" / "analysis.json").read_text())["subspace_similarity"][0]
    first = next(iter(pair["layers"]))
    # One step at lr 1e-3 leaves A near its draw: shared draws would give phi(2, 4) near 1; independent ones
    # about max(i, j) / d = 4 / 64 on the narrow model
    assert pair["layers"][first][-1][-1] < 0.5
    assert pair["init"][first][-1][-1] < 0.5 and len(pair["init"]) == len(pair["layers"])
    text = (sweep / "analysis" / "analysis.md").read_text()
    assert "| at init: mean |" in text


def test_the_initial_A_is_drawn_again_exactly_as_training_drew_it(tiny_dir):
    """The init baseline is fair only if it is the A training started from: --mode lora's build_model draw."""
    from pathlib import Path

    from lora.factors import AdapterFactors
    from modes.analyse import initial_A
    from modes.train import build_model
    from modes.train_config import config_from_args

    args = run.build_parser().parse_args(["--mode", "lora", "--model", str(tiny_dir), "--random-init", "--seed",
                                          str(SEED), "--lora-r", "4", "--lora-init-seed", "7"])
    model, _ = build_model(config_from_args(args))
    layers = {name: (layer.lora_A.detach(), layer.lora_B.detach()) for name, layer in lora_layers(model)}
    adapter = AdapterFactors(Path("run/adapter"), {"r": 4, "lora_alpha": 32, "target_modules": ["q", "v"]}, 1.0, layers)
    base = build_random_init(tiny_dir, seed=SEED)
    drawn = initial_A(base, adapter, init_seed=7)
    assert drawn.keys() == layers.keys() and all(torch.equal(drawn[n], A) for n, (A, _) in layers.items())
    assert not lora_layers(base)  # the base model is given back as it was
    assert not torch.equal(initial_A(base, adapter, init_seed=8)[next(iter(layers))], next(iter(layers.values()))[0])


def test_a_large_fine_tune_is_accepted_and_unrelated_weights_are_not():
    """The guard reads alignment, not distance: the baby model's full run moved q by 61% of its norm and is still
    its base fine-tuned (the old rule, distance > 50%, refused it); an independent draw of the same size is not."""
    from lora.analysis import full_updates

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    step = torch.randn(64, 64, generator=g)
    moved = w + 0.61 * w.norm() * step / step.norm()  # 61% of W's norm, in a random direction
    assert torch.allclose(full_updates({"q": w}, {"q": moved}, ["q"])["q"], (moved - w).double())
    with pytest.raises(ValueError, match="cosine with the base's W is -?0.0"):
        full_updates({"q": w}, {"q": torch.randn(64, 64, generator=g)}, ["q"])
