"""Every Linear name `find_targets` offers is a target that works end to end: it trains, generates, saves an adapter
that peft loads with the same logits and tokens, and merges; on T5's gated-gelu and relu feed-forward alike.
(`wo` once failed: T5's feed-forward reads `self.wo.weight`, which a LoRALinear must expose as peft's layer does.)"""
import copy
import re

import pytest
import torch
from peft import PeftModel

from lora.adapter_file import load_adapter, save_adapter
from lora.layer import LoRAConfig, LoRALinear, add_lora, find_targets, lora_layers
from lora.merge import lora_parameters, merge_lora, unload_lora, unmerge_lora
from model.load import build_from_config
from tests.conftest import tiny_t5_config
from tests.train_helpers import quick_config, random_batches
from train_loop.loop import train

CPU = torch.device("cpu")
FEED_FORWARDS = ("gated-gelu", "relu")


def base_model(feed_forward: str):
    return build_from_config(tiny_t5_config(feed_forward_proj=feed_forward), dtype=torch.float64).eval()


def offered_names(model) -> list[str]:
    """The names find_targets lists when a target matches nothing: the ones a user is told to choose from."""
    with pytest.raises(ValueError) as err:
        find_targets(model, "no-such-layer")
    return re.search(r"are: (.*)$", str(err.value)).group(1).split(", ")


CASES = [(ff, name) for ff in FEED_FORWARDS for name in offered_names(base_model(ff))]


def test_both_feed_forwards_offer_their_own_layers():
    names = {ff: {name for f, name in CASES if f == ff} for ff in FEED_FORWARDS}
    assert {"q", "k", "v", "o", "wo", "lm_head"} <= names["relu"] & names["gated-gelu"]
    assert "wi" in names["relu"] and {"wi_0", "wi_1"} <= names["gated-gelu"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).logits


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# peft warns on lm_head that the config says tie_word_embeddings=True: transformers 5's T5Config always says so, while
# the head is untied, as FLAN-T5's (model/load.py).
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
@pytest.mark.parametrize("feed_forward, target", CASES, ids=[f"{ff}-{name}" for ff, name in CASES])
def test_every_offered_target_trains_generates_saves_loads_in_peft_and_merges(feed_forward, target, tmp_path):
    base = base_model(feed_forward)
    model = copy.deepcopy(base)
    names = add_lora(model, LoRAConfig(targets=(target,), r=4, alpha=8, dropout=0.0))
    assert names and all(isinstance(model.get_submodule(n), LoRALinear) for n in names)

    batches = random_batches(2, batch_size=2)
    before = [p.detach().clone() for p in lora_parameters(model)]
    result = train(model, lambda epoch: batches, quick_config(max_steps=2, grad_accum=1), CPU)
    assert all(loss == loss and loss < 1e3 for loss in result.progress.losses)  # finite
    assert all(not torch.equal(p, b) for p, b in zip(lora_parameters(model), before))  # A and B both moved

    with torch.no_grad():  # A and B far from their init, so agreeing below means something
        for p in lora_parameters(model):
            p.normal_(std=0.3)
    model.eval()
    ids = torch.randint(2, 128, (2, 7))
    ours = _logits(model, ids)
    assert _rel(ours, _logits(base, ids)) > 1e-3
    tokens = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)  # (2, <= 5)

    save_adapter(model, tmp_path, "tiny")
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert _rel(_logits(theirs, ids), ours) <= 1e-12
    assert torch.equal(theirs.generate(input_ids=ids, max_new_tokens=4, do_sample=False), tokens)
    again = copy.deepcopy(base)
    assert load_adapter(again, tmp_path) == names
    assert _rel(_logits(again, ids), ours) <= 1e-12

    merge_lora(model)
    assert _rel(_logits(model, ids), ours) <= 1e-10
    unmerge_lora(model)
    plain = unload_lora(model, merge=True)
    assert not lora_layers(plain) and _rel(_logits(plain, ids), ours) <= 1e-10
