"""LoRA's family against peft 0.21: DoRA (lora/dora.py) and PiSSA (lora/pissa.py) give peft's logits and gradients
in float64 on a tiny T5 and on flan-t5-small's architecture, their adapters load both ways, merged equals unmerged;
LoRA+'s parameter groups (lora/loraplus.py) are `create_loraplus_optimizer`'s; bad combinations are one line."""
import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.optimizers import create_loraplus_optimizer

from lora.adapter_file import load_adapter, save_adapter
from lora.layer import LoRAConfig, add_lora, lora_layers
from lora.merge import lora_parameters, merge_lora, unmerge_lora
from model.load import build_from_config, build_random_init
from tests.conftest import SMALL_DIR, tiny_t5_config
from tests.test_lora_peft import _rel
from tests.test_run_training import fails, narrow_model_dir, small_run  # noqa: F401 (fixture)
import run
from train_loop.step import OptimConfig, build_optimizer, build_scheduler

R, ALPHA = 4, 8


@pytest.fixture(scope="module")
def bases():
    """float32 copies too: peft refuses PiSSA in float64 ("initialize PiSSA under float32, ...")."""
    tiny = build_from_config(tiny_t5_config(), dtype=torch.float64).eval()
    small = build_random_init(SMALL_DIR, dtype=torch.float32).eval()
    return {"tiny": tiny, "flan-t5-small": small}


def _base(bases, which, dtype=torch.float64):
    return copy.deepcopy(bases[which]).to(dtype)


def _batch(model, seq=6):
    vocab = model.config.vocab_size
    return torch.randint(2, vocab, (1, seq)), torch.randint(2, vocab, (1, 4))


def _peft(base, copy_base=True, **kwargs):
    config = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["q", "v"], lora_dropout=0.0,
                        task_type="SEQ_2_SEQ_LM", **kwargs)
    return get_peft_model(copy.deepcopy(base) if copy_base else base, config)


def _pairs(ours, theirs, names=("lora_A", "lora_B", "lora_magnitude_vector")):
    """(our parameter, peft's) for every trainable tensor, in our layers' order."""
    pairs = []
    for name, layer in lora_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(name)
        for matrix in names:
            if hasattr(layer, matrix):
                peft_param = getattr(peft_layer, matrix)["default"].weight
                pairs.append((getattr(layer, matrix), peft_param))
    return pairs


def _same_logits_and_gradients(base_logits, ids, labels, ours, theirs, pairs):
    out_ours, out_theirs = ours(input_ids=ids, labels=labels), theirs(input_ids=ids, labels=labels)
    assert _rel(out_ours.logits, base_logits) > 1e-3  # the adapters matter
    logits = _rel(out_ours.logits, out_theirs.logits)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    grads = max(_rel(a.grad, b.grad) for a, b in pairs)
    assert len(pairs) == len(lora_parameters(ours))
    return logits, grads


def _perturb(pairs):
    """Trained-looking values, the same in both models."""
    with torch.no_grad():
        for ours, theirs in pairs:
            ours.copy_(ours * (1 + 0.1 * torch.randn_like(ours)) + 0.1 * torch.randn_like(ours))
            theirs.copy_(ours)


@pytest.mark.parametrize("which", ["tiny", "flan-t5-small"])
def test_dora_gives_peft_logits_and_gradients_in_float64(bases, which):
    base = _base(bases, which)
    ids, labels = _batch(base)
    with torch.no_grad():
        base_logits = base(input_ids=ids, labels=labels).logits
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="dora"))
    theirs = _peft(base, copy_base=False, use_dora=True)  # peft changes `base` in place
    pairs = _pairs(ours, theirs)
    magnitudes = [(a, b) for a, b in pairs if a.ndim == 1]
    assert len(magnitudes) == len(lora_layers(ours)) and max(_rel(a, b) for a, b in magnitudes) <= 1e-12  # ||W||_c
    _perturb(pairs)
    logits, grads = _same_logits_and_gradients(base_logits, ids, labels, ours, theirs, pairs)
    assert logits <= 1e-9 and grads <= 1e-9, (logits, grads)


@pytest.mark.parametrize("which", ["tiny", "flan-t5-small"])
def test_pissa_init_and_model_equal_peft(bases, which):
    """peft initialises PiSSA in float32 only: both start there, on the same W, then compute in float64."""
    base32 = _base(bases, which, torch.float32)
    ids, labels = _batch(base32)
    with torch.no_grad():
        base_logits = base32.double()(input_ids=ids, labels=labels).logits
    base32.float()
    ours = copy.deepcopy(base32)
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="pissa"))
    theirs = _peft(base32, copy_base=False, init_lora_weights="pissa")
    for name, layer in lora_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert torch.equal(layer.lora_A, peft_layer.lora_A["default"].weight)
        assert torch.equal(layer.lora_B, peft_layer.lora_B["default"].weight)
        assert torch.equal(layer.base.weight, peft_layer.base_layer.weight)  # W_res = W - s B A
    ours, theirs = ours.double(), theirs.double()
    pairs = _pairs(ours, theirs)
    _perturb(pairs)
    logits, grads = _same_logits_and_gradients(base_logits, ids, labels, ours, theirs, pairs)
    assert logits <= 1e-9 and grads <= 1e-9, (logits, grads)


def test_pissa_starts_as_the_base_model_and_its_update_is_the_top_r_part(bases):
    base = _base(bases, "tiny")
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="pissa"))
    ids, labels = _batch(base)
    with torch.no_grad():
        assert _rel(ours(input_ids=ids, labels=labels).logits, base(input_ids=ids, labels=labels).logits) <= 1e-12
    name, layer = lora_layers(ours)[0]
    W = base.get_submodule(name).weight
    U, S, Vh = torch.linalg.svd(W)
    top = U[:, :R] @ torch.diag(S[:R]) @ Vh[:R]
    assert _rel(layer.delta_weight(), top) <= 1e-12  # s B A is W's best rank-r approximation


@pytest.mark.parametrize("variant", ["dora", "pissa"])
def test_merged_equals_unmerged_and_unmerge_gives_w_back(bases, variant):
    base = _base(bases, "tiny")
    model = copy.deepcopy(base).eval()
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant=variant))
    with torch.no_grad():
        for p in lora_parameters(model):
            p.mul_(1 + 0.2 * torch.randn_like(p)).add_(0.1 * torch.randn_like(p))
    weights = [layer.base.weight.clone() for _, layer in lora_layers(model)]
    ids, labels = _batch(base)
    with torch.no_grad():
        before = model(input_ids=ids, labels=labels).logits
        merge_lora(model)
        merged = model(input_ids=ids, labels=labels).logits
        unmerge_lora(model)
    assert _rel(merged, before) <= 1e-12
    assert max(_rel(layer.base.weight, w) for (_, layer), w in zip(lora_layers(model), weights)) <= 1e-12


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).logits


def test_dora_adapters_load_both_ways(bases, tmp_path):
    base = _base(bases, "tiny")
    ids = _batch(base)[0]
    ours = copy.deepcopy(base).eval()
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="dora"))
    _perturb([(p, p.clone()) for p in lora_parameters(ours)])
    save_adapter(ours, tmp_path / "ours", "tiny")
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours").eval()
    assert _rel(_logits(in_peft, ids), _logits(ours, ids)) <= 1e-9

    theirs = _peft(base, use_dora=True).eval()
    _perturb([(b, b.clone()) for a, b in _pairs(ours, theirs)])
    theirs.save_pretrained(tmp_path / "peft")
    loaded = copy.deepcopy(base)
    load_adapter(loaded, tmp_path / "peft")
    assert all(layer.variant == "dora" for _, layer in lora_layers(loaded))
    assert _rel(_logits(loaded.eval(), ids), _logits(theirs, ids)) <= 1e-9


def test_pissa_adapters_load_both_ways_as_plain_lora_on_the_original_base(bases, tmp_path):
    base = _base(bases, "tiny")
    ids = _batch(base)[0]
    ours = copy.deepcopy(base).eval()
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="pissa"))
    _perturb([(p, p.clone()) for p in lora_parameters(ours)])  # as if trained
    save_adapter(ours, tmp_path / "ours", "tiny")
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours").eval()  # the untouched W
    assert in_peft.peft_config["default"].r == 2 * R
    assert _rel(_logits(in_peft, ids), _logits(ours, ids)) <= 1e-9

    base32 = copy.deepcopy(base).float()  # peft: PiSSA in float32 only
    theirs = _peft(base32, init_lora_weights="pissa").eval()
    theirs.save_pretrained(tmp_path / "initial")
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_" in name:
                p.mul_(1.1).add_(0.05)
    theirs.save_pretrained(tmp_path / "peft", path_initial_model_for_weight_conversion=str(tmp_path / "initial"))
    loaded = copy.deepcopy(base32)
    load_adapter(loaded, tmp_path / "peft")
    assert all(layer.variant == "lora" and layer.r == 2 * R for _, layer in lora_layers(loaded))
    assert _rel(_logits(loaded.eval(), ids), _logits(theirs, ids)) <= 1e-5  # float32: W_res + s B A vs W + delta


def _names(model, group, prefix=""):
    by_id = {id(p): n.removeprefix(prefix).removesuffix(".default.weight") for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in group["params"]]


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_loraplus_groups_and_rates_equal_peft(bases, variant):
    base = _base(bases, "tiny")
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant=variant))
    theirs = _peft(base, use_dora=variant == "dora")
    config = OptimConfig(lr=1e-3, weight_decay=0.01, loraplus_lr_ratio=16)
    optimizer = build_optimizer(ours, config, torch.device("cpu"))
    reference = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16,
                                          loraplus_weight_decay=0.01)
    assert len(optimizer.param_groups) == len(reference.param_groups) == 4
    for group, peft_group in zip(optimizer.param_groups, reference.param_groups):
        assert _names(ours, group) == _names(theirs, peft_group, "base_model.model.")
        assert (group["lr"], group["weight_decay"]) == (peft_group["lr"], peft_group["weight_decay"])
    B = optimizer.param_groups[2]["params"]
    assert len(B) == len(lora_layers(ours)) * (2 if variant == "dora" else 1)  # B (and DoRA's m)
    scheduler = build_scheduler(optimizer, config, total_steps=10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    a_lr, _, b_lr, _ = scheduler.get_last_lr()
    assert b_lr == pytest.approx(16 * a_lr) and a_lr == pytest.approx(1e-3 * 7 / 10)  # the ratio at every step


@pytest.mark.parametrize("flags, message", [
    (["--lora-variant", "pissa", "--quantize-base", "nf4"], "--lora-variant pissa with --quantize-base nf4 is not"),
    (["--lora-variant", "dora", "--quantize-base", "nf4"], "--lora-variant dora with --quantize-base nf4 is not"),
    (["--loraplus-lr-ratio", "0"], "--loraplus-lr-ratio 0.0: lambda = lr_B / lr_A must be positive"),
    (["--loraplus-lr-ratio", "-2"], "--loraplus-lr-ratio -2.0: lambda"),
    (["--nf4-double-quant"], "--nf4-double-quant quantises the absmax of a 4-bit base"),
    (["--mode", "full", "--lora-variant", "dora"], "--lora-variant: LoRA's family trains adapters; use --mode lora"),
    (["--mode", "sweep", "--variants", "lora,bogus"], "--variants 'lora,bogus': need distinct names"),
    (["--mode", "sweep", "--variants", "lora,dora", "--lora-variant", "dora"], "leave out --lora-variant"),
])
def test_bad_combinations_give_one_line_and_exit_code_2(flags, message, tmp_path, capsys):
    mode = [] if "--mode" in flags else ["--mode", "lora"]
    line = fails([*mode, "--model", str(SMALL_DIR), "--output-dir", str(tmp_path / "out"), *flags], capsys)
    assert message in line, line


def _two_steps(flags):
    flags[flags.index("--max-steps") + 1] = "2"
    return flags


def test_the_variants_sweep_trains_each_member_with_everything_else_equal(tmp_path, narrow_model_dir):  # noqa: F811
    out = tmp_path / "sweep"
    names = ["lora", "dora", "pissa", "loraplus", "qlora"]
    assert run.main(_two_steps(small_run("sweep", narrow_model_dir, out, "--variants", ",".join(names),
                                         "--lora-r", "2"))) == 0
    metrics = {name: json.loads((out / name / "metrics.json").read_text()) for name in names}
    assert [metrics[n]["lora"]["variant"] for n in names] == ["lora", "dora", "pissa", "lora", "lora"]
    assert [metrics[n]["train"]["optim"]["loraplus_lr_ratio"] for n in names] == [None, None, None, 16.0, None]
    assert [metrics[n]["quantize_base"] for n in names] == [None, None, None, None, "nf4"]
    assert len({(m["lora"]["init_seed"], m["lora"]["r"], m["data"]["max_train_samples"], m["steps"])
                for m in metrics.values()}) == 1  # one seed, rank, data and number of steps for all
    ledger = {n: m["memory_ledger"]["weights_bytes"] for n, m in metrics.items()}
    assert ledger["qlora"] < ledger["lora"]
    assert metrics["dora"]["trainable_params"] > metrics["lora"]["trainable_params"]  # + m, one per output feature
    assert json.loads((out / "pissa" / "adapter" / "adapter_config.json").read_text())["r"] == 4  # 2r, plain LoRA
    assert json.loads((out / "dora" / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    text = (out / "variants.md").read_text()
    assert all(f"| [{n}]({n}/metrics.json) |" in text for n in names) and (out / "variants.png").stat().st_size > 1000


def test_a_qlora_run_merges_into_the_dequantised_base(tmp_path, narrow_model_dir):  # noqa: F811
    out = tmp_path / "qlora"
    assert run.main(_two_steps(small_run("lora", narrow_model_dir, out, "--quantize-base", "nf4",
                                         "--nf4-double-quant", "--merge", "--loraplus-lr-ratio", "4"))) == 0
    merged = json.loads((out / "merged_model" / "config.json").read_text())
    assert merged["d_model"] == 64 and (out / "adapter" / "adapter_model.safetensors").is_file()


def test_magnitude_and_direction_change_are_the_dora_papers_equations():
    """lora/decomposition.py on constructed weights: scaling rows moves only the magnitude, rotating them only the
    direction, and a trained DoRA layer's W is `adapted_weight` of its A, B and m."""
    from lora.decomposition import adapted_weight, magnitude_direction_change

    W0 = torch.randn(6, 5, dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    delta_m, delta_d = magnitude_direction_change(W0, scale[:, None] * W0)
    assert delta_m == pytest.approx(((scale - 1).abs() * W0.norm(dim=1)).mean().item()) and abs(delta_d) < 1e-12
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))  # an orthogonal map keeps every row's length
    delta_m, delta_d = magnitude_direction_change(W0, W0 @ Q)
    cos = torch.nn.functional.cosine_similarity(W0 @ Q, W0, dim=1)
    assert abs(delta_m) < 1e-12 and delta_d == pytest.approx((1 - cos).mean().item())
    model = copy.deepcopy(build_from_config(tiny_t5_config(), dtype=torch.float64))
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, dropout=0.0, variant="dora"))
    _perturb([(p, p.clone()) for p in lora_parameters(model)])
    _, layer = lora_layers(model)[0]
    W = adapted_weight(layer.base.weight, layer.lora_A, layer.lora_B, layer.scaling, layer.lora_magnitude_vector)
    with torch.no_grad():
        layer.merge()
    assert _rel(W, layer.base.weight) <= 1e-12
