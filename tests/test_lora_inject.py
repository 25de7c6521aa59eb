"""add_lora / merge / unload on real T5 architectures: counts, exactness at init, merging, gradients, errors."""
import copy

import pytest
import torch
from transformers import T5ForConditionalGeneration

from lora.layer import LoRAConfig, add_lora, lora_layers
from lora.merge import lora_parameters, merge_lora, parameter_report, unload_lora, unmerge_lora
from lora.layer import LoRALinear
from model.load import build_from_config, build_random_init, count_parameters
from tests.conftest import BASE_DIR, SMALL_DIR, tiny_t5_config


def _tiny(dtype=torch.float64):
    return build_from_config(tiny_t5_config(), dtype=dtype).eval()


def _randomise_adapters(model):
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.3)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).logits


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_flan_t5_small_r8_on_q_v_counts_as_facts_md_says():
    with torch.device("meta"):
        model = build_random_init(SMALL_DIR)
        base_total = count_parameters(model)[1]
        names = add_lora(model, LoRAConfig(targets=("q", "v"), r=8, alpha=16, dropout=0.0))
    assert base_total == 76_961_152
    assert len(names) == 8 * 2 + 8 * 4  # q, v in each encoder self-attention; in decoder self- and cross-attention
    assert count_parameters(model) == (344_064, 76_961_152 + 344_064)
    report = parameter_report(model)
    assert "trainable params: 344,064 || all params: 77,305,216 || trainable%: 0.445" in report
    assert "LoRA adds 344,064 params = 0.447% of the 76,961,152 in the base model" in report
    assert any(line.split()[:3] == ["q", "24", "172,032"] for line in report.splitlines())


def test_flan_t5_base_r32_on_q_v_counts_as_the_seeds_print():
    with torch.device("meta"):
        model = build_random_init(BASE_DIR)
        add_lora(model, LoRAConfig(targets=("q", "v"), r=32, alpha=32, dropout=0.05))
    assert count_parameters(model) == (3_538_944, 251_116_800)
    report = parameter_report(model)
    assert "trainable params: 3,538,944 || all params: 251,116,800 || trainable%: 1.41" in report
    assert "LoRA adds 3,538,944 params = 1.43% of the 247,577,856 in the base model" in report


def test_targets_match_the_last_name_component_exactly():
    model = _tiny()
    names = add_lora(model, LoRAConfig(targets="q,v", r=2, alpha=4, dropout=0.0))
    assert len(names) == 2 * 2 + 2 * 4 and "decoder.block.1.layer.1.EncDecAttention.v" in names
    assert all(name.rsplit(".", 1)[-1] in ("q", "v") for name in names)
    assert [name for name, _ in lora_layers(model)] == names
    assert type(model.encoder.block[0].layer[0].SelfAttention.k) is torch.nn.Linear
    # a substring matcher would also take "vv", "prev" and "v_proj"
    linear = lambda: torch.nn.Linear(2, 2)  # noqa: E731
    toy = torch.nn.ModuleDict({"v": linear(), "vv": linear(), "prev": linear(), "v_proj": linear(),
                               "block": torch.nn.ModuleDict({"v": linear()})})
    assert add_lora(toy, LoRAConfig(targets=("v",), r=1, alpha=1, dropout=0.0)) == ["v", "block.v"]
    assert [type(toy[k]).__name__ for k in ("vv", "prev", "v_proj")] == ["Linear"] * 3


def test_at_init_the_adapted_model_gives_the_base_logits_exactly():
    base = _tiny(torch.float32)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    ids = torch.randint(2, 128, (2, 9))
    assert torch.equal(_logits(model, ids), _logits(base, ids))


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_merged_logits_equal_unmerged_and_unmerge_restores_the_base(dtype, rtol):
    base = _tiny(dtype)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, use_rslora=True, dropout=0.0))
    _randomise_adapters(model)
    ids = torch.randint(2, 128, (2, 9))
    unmerged, base_logits = _logits(model, ids), _logits(base, ids)
    assert _rel(unmerged, base_logits) > 1e-2  # the adapters really change the output
    merge_lora(model)
    assert _rel(_logits(model, ids), unmerged) <= rtol
    unmerge_lora(model)
    for (name, layer), original in zip(lora_layers(model), [base.get_submodule(n) for n, _ in lora_layers(model)]):
        assert _rel(layer.base.weight, original.weight) <= 1e-6, name


def test_unload_with_merge_gives_a_plain_model_that_saves_and_reloads(tmp_path):
    model = _tiny(torch.float32)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    _randomise_adapters(model)
    ids = torch.randint(2, 128, (2, 9))
    adapted = _logits(model, ids)
    plain = unload_lora(model, merge=True)
    assert type(plain) is T5ForConditionalGeneration and not lora_layers(plain)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert "lora" not in " ".join(plain.state_dict())
    assert _rel(_logits(plain, ids), adapted) <= 1e-5
    plain.save_pretrained(tmp_path)
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(_logits(reloaded, ids), _logits(plain, ids))


def test_unload_without_merge_gives_back_the_base_model():
    base = _tiny()
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    _randomise_adapters(model)
    ids = torch.randint(2, 128, (2, 9))
    assert torch.equal(_logits(unload_lora(model, merge=False), ids), _logits(base, ids))


def test_after_backward_only_a_and_b_have_gradients():
    model = _tiny(torch.float32).train()
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))
    _randomise_adapters(model)
    ids = torch.randint(2, 128, (2, 9))
    model(input_ids=ids, labels=ids).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in model.named_parameters() if name.endswith(("lora_A", "lora_B"))}
    assert len(with_grad) == 2 * 2 * 6  # 2 per layer; q, v; 2 encoder + 4 decoder attention blocks
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)


def test_a_target_that_matches_nothing_lists_the_linear_names_and_changes_nothing():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    listing = r"'query' matches no nn.Linear.*Did you mean 'q'\?.*are: k, lm_head, o, q, v, wi_0, wi_1, wo"
    with pytest.raises(ValueError, match=listing):
        add_lora(model, LoRAConfig(targets=("q", "query"), r=4, alpha=8, dropout=0.0))
    with pytest.raises(ValueError, match="'relative_attention_bias' matches no nn.Linear"):
        add_lora(model, LoRAConfig(targets=("relative_attention_bias",), r=4, alpha=8, dropout=0.0))
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "r=0"), (dict(alpha=0), "alpha=0"), (dict(dropout=1.0), "dropout=1.0"),
    (dict(dropout=-0.5), "dropout=-0.5"), (dict(targets=()), "at least one"),
])
def test_bad_settings_raise_before_the_model_changes(kwargs, message):
    model = _tiny()
    with pytest.raises(ValueError, match=message):
        add_lora(model, LoRAConfig(**(dict(r=4, alpha=8) | kwargs)))
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_adding_twice_merging_twice_and_merging_nothing_raise():
    model = _tiny()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(model)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    with pytest.raises(ValueError, match="not merged"):
        unmerge_lora(model)
    merge_lora(model)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    assert all(layer.merged for _, layer in lora_layers(model))


def test_lora_has_one_set_of_defaults_and_one_target_parser():
    """run.py's --lora-* defaults are LoRAConfig's fields (the course's flan-t5-base seeds); "q, v,q" and ("q", "v")
    name the same targets."""
    import run
    from modes.train_config import lora_config

    args = run.build_parser().parse_args(["--mode", "lora"])
    assert lora_config(args) == LoRAConfig(init_seed=args.seed) == LoRAConfig(("q", "v"), 32, 32, 0.05, False, 42)
    assert LoRAConfig(targets="q, v,q").targets == LoRAConfig(targets=["q", "v"]).targets == ("q", "v")
    with pytest.raises(ValueError, match="takes a LoRAConfig"):
        add_lora(_tiny(), ("q", "v"))
