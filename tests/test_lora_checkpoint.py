"""Adapters in peft's format (lora/adapter_file.py): ours load in peft, peft's load in ours, and bad folders
fail with clear errors."""
import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from lora.adapter_file import load_adapter, save_adapter
from lora.layer import LoRAConfig, add_lora, lora_layers
from lora.merge import lora_parameters, merge_lora
from model.load import build_from_config
from tests.conftest import tiny_t5_config


@pytest.fixture
def base():
    return build_from_config(tiny_t5_config(), dtype=torch.float64).eval()


@pytest.fixture
def ids():
    return torch.randint(2, 128, (2, 9))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).logits


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _trained(base, r=4, alpha=8, use_rslora=False, targets=("q", "v")):
    """A LoRA model whose A and B are not at their init (as after training)."""
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(targets=targets, r=r, alpha=alpha, dropout=0.05, use_rslora=use_rslora))
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.3)
    return model.eval()


def _peft_saved(base, folder, r=4, alpha=8, use_rslora=True):
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["q", "v"], lora_dropout=0.1,
                        use_rslora=use_rslora, task_type="SEQ_2_SEQ_LM")
    peft_model = get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.3)
    peft_model.save_pretrained(folder)
    return peft_model.eval()


def test_our_files_have_peft_keys_shapes_and_config_fields(base, tmp_path):
    _peft_saved(base, tmp_path / "peft", use_rslora=False)
    save_adapter(_trained(base), tmp_path / "ours", "google/flan-t5-small")
    ours, theirs = load_file(tmp_path / "ours" / "adapter_model.safetensors"), load_file(
        tmp_path / "peft" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours["base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"].shape == (4, 32)
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    peft_config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    for field in ("peft_type", "task_type", "r", "lora_alpha", "bias", "fan_in_fan_out", "use_rslora", "use_dora",
                  "inference_mode", "init_lora_weights"):
        assert config[field] == peft_config[field], field
    assert sorted(config["target_modules"]) == sorted(peft_config["target_modules"])
    assert config["lora_dropout"] == 0.05 and config["base_model_name_or_path"] == "google/flan-t5-small"


@pytest.mark.parametrize("r, alpha, use_rslora", [(4, 8, False), (8, 8, True)])
def test_our_adapter_loads_in_peft_with_the_same_logits(base, ids, tmp_path, r, alpha, use_rslora):
    ours = _trained(base, r, alpha, use_rslora)
    save_adapter(ours, tmp_path, "tiny")
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert _rel(_logits(ours, ids), _logits(base, ids)) > 1e-3
    assert _rel(_logits(theirs, ids), _logits(ours, ids)) <= 1e-12


def test_a_peft_adapter_loads_in_ours_with_the_same_logits(base, ids, tmp_path):
    theirs = _peft_saved(base, tmp_path)
    model = copy.deepcopy(base)
    names = load_adapter(model, tmp_path)
    assert len(names) == 12 and all(layer.use_rslora and layer.r == 4 for _, layer in lora_layers(model))
    assert lora_layers(model)[0][1].dropout.p == 0.1  # the config's dropout, for further training
    assert _rel(_logits(model.eval(), ids), _logits(theirs, ids)) <= 1e-12


def test_loading_into_a_model_with_matching_lora_only_copies_the_weights(base, ids, tmp_path):
    saved = _trained(base)
    save_adapter(saved, tmp_path)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    layers_before = [layer for _, layer in lora_layers(model)]
    load_adapter(model, tmp_path)
    assert [layer for _, layer in lora_layers(model)] == layers_before  # same objects, no second injection
    assert torch.equal(_logits(model, ids), _logits(saved, ids))


def _assert_unchanged(model, reference):
    assert not lora_layers(model)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_missing_or_malformed_files_raise_naming_them(base, tmp_path):
    model = copy.deepcopy(base)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(model, tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_adapter(model, tmp_path)
    save_adapter(_trained(base), tmp_path)
    config_path = tmp_path / "adapter_config.json"
    good = json.loads(config_path.read_text())
    config_path.write_text('{\n  "r": 4,\n  "lora_alpha": 8\n  "peft_type": "LORA"\n}')
    with pytest.raises(ValueError, match=r"adapter_config.json is not valid JSON \(line 4"):
        load_adapter(model, tmp_path)
    bad_configs = [({"target_modules": None}, "no 'target_modules'"), ({"peft_type": "IA3"}, "peft_type is 'IA3'"),
                   ({"r": 0}, "r=0"), ({"lora_alpha": -1}, "alpha=-1"), ({"lora_dropout": 1.5}, "dropout=1.5"),
                   ({"target_modules": "q|v"}, "regex string is not supported"),
                   ({"fan_in_fan_out": True}, "fan_in_fan_out=True is not supported"),
                   ({"use_dora": True}, "no tensor '.*lora_magnitude_vector'")]  # DoRA (lora/dora.py) needs m
    for change, message in bad_configs:
        config = {k: v for k, v in (good | change).items() if v is not None}
        config_path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=message):
            load_adapter(model, tmp_path)
    config_path.write_text(json.dumps(good))
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        load_adapter(model, tmp_path)
    _assert_unchanged(model, base)


def test_an_adapter_for_another_rank_or_model_names_the_key_and_both_shapes(base, tmp_path):
    save_adapter(_trained(base, r=4), tmp_path)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=8, alpha=8, dropout=0.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first_key = r"'base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight'"
    with pytest.raises(ValueError, match=first_key + r" has shape \(4, 32\) but the model expects \(8, 32\)"):
        load_adapter(model, tmp_path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    wider = build_from_config(tiny_t5_config(d_model=48), dtype=torch.float64)
    reference = copy.deepcopy(wider)
    with pytest.raises(ValueError, match=first_key + r" has shape \(4, 32\) but the model expects \(4, 48\)"):
        load_adapter(wider, tmp_path)
    _assert_unchanged(wider, reference)


def test_an_adapter_for_other_targets_is_refused(base, tmp_path):
    save_adapter(_trained(base, targets=("q", "v")), tmp_path)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(targets=("q", "k"), r=4, alpha=8, dropout=0.0))
    with pytest.raises(ValueError, match=r"has no tensor '.*SelfAttention.k.lora_A.weight'"):
        load_adapter(model, tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")  # a file with one key the model has no place for
    weights["base_model.model.encoder.block.0.layer.0.SelfAttention.k.lora_A.weight"] = torch.zeros(4, 32)
    save_file(weights, tmp_path / "adapter_model.safetensors")
    plain = copy.deepcopy(base)
    with pytest.raises(ValueError, match=r"'.*SelfAttention.k.lora_A.weight' has no matching LoRA layer"):
        load_adapter(plain, tmp_path)
    _assert_unchanged(plain, base)
    config = json.loads((tmp_path / "adapter_config.json").read_text()) | {"target_modules": ["q", "value"]}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'value' matches no nn.Linear"):
        load_adapter(plain, tmp_path)
    _assert_unchanged(plain, base)


def test_other_alpha_or_a_merged_model_is_refused(base, tmp_path):
    save_adapter(_trained(base, alpha=8), tmp_path)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=16, dropout=0.0))
    with pytest.raises(ValueError, match="alpha=16.*lora_alpha=8"):
        load_adapter(model, tmp_path)
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    merge_lora(model)
    with pytest.raises(ValueError, match="is merged; call unmerge_lora"):
        load_adapter(model, tmp_path)


def test_saving_a_model_without_lora_raises(base, tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(base, tmp_path)
