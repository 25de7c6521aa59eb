"""The label-only loss (train_loop/step.py) is the full-logits loss: same value, same gradient for every
parameter, with and without the tied head's output scaling, with LoRA, and on flan-t5-small's architecture.
A seq2seq model other than T5 (BART) gets its own forward's loss, summed, and trains fully or with LoRA."""
import math

import pytest
import torch
import torch.nn.functional as F

from lora.layer import LoRAConfig, add_lora
from model.load import build_random_init
from tests.conftest import SMALL_DIR
from tests.train_helpers import quick_config, random_batches, tiny_model
from train_loop.loop import train
from train_loop.step import label_tokens, token_loss_sum
from model.device import autocast

CPU = torch.device("cpu")


def full_logits_loss_sum(model, batch, precision="fp32"):
    """The loss as it was: the model's own forward, logits for every decoder position, padding ignored."""
    labels = batch["labels"]
    with autocast(precision, CPU):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels)).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")


def loss_and_grads(loss_fn, model, batch, **kw):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch, **kw)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("tied_head", [True, False], ids=["tied-head-scaled", "untied-head"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_label_only_loss_and_gradients_equal_the_full_logits_ones_in_float64(tied_head, lora):
    model = tiny_model(tie_word_embeddings=tied_head).double()
    assert model.config.scale_decoder_outputs == tied_head  # both branches of decoder_states are exercised
    if lora:
        add_lora(model, LoRAConfig(targets=("q", "v"), r=4, alpha=8, dropout=0.0))
        with torch.no_grad():  # B != 0, so the adapters change the output and A gets a gradient too
            for name, p in model.named_parameters():
                if name.endswith("lora_B"):
                    p.normal_(std=0.1)
    batch = random_batches(1, batch_size=4, seed=3)[0]
    assert (batch["labels"] == -100).any()  # padded labels: the rows the new loss skips exist
    ours, our_grads = loss_and_grads(lambda m, b: token_loss_sum(m, b, "fp32", CPU), model, batch)
    theirs, their_grads = loss_and_grads(full_logits_loss_sum, model, batch)
    assert abs(ours.item() - theirs.item()) <= 1e-12 * abs(theirs.item())
    assert our_grads.keys() == their_grads.keys() and len(our_grads) > 0
    for name in their_grads:
        assert relative_difference(our_grads[name], their_grads[name]) < 1e-10, name


@pytest.fixture(scope="module")
def small_model():
    return build_random_init(SMALL_DIR, seed=0).eval()  # eval: no dropout, both runs see the same network


@pytest.fixture(scope="module")
def small_batch():
    """A flan-t5-small-sized batch: 2 rows, inputs of 40 and 25 tokens, labels of 12 and 5 (padding in both)."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, 32000, (2, 40), generator=g)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 25:], attention_mask[1, 25:] = 0, 0
    labels = torch.randint(2, 32000, (2, 12), generator=g)
    labels[1, 5:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.mark.parametrize("precision, loss_tol, grad_tol", [("fp32", 1e-6, 1e-5), ("bf16", 1e-3, 5e-2)])
def test_label_only_loss_equals_the_full_logits_loss_on_flan_t5_small(small_model, small_batch, precision, loss_tol,
                                                                      grad_tol):
    """fp32: equal to rounding (measured: identical). bf16: the same products, summed in another order in the
    head's weight gradient (measured: loss identical, gradients within 0.7% relative)."""
    model = small_model
    ours, our_grads = loss_and_grads(lambda m, b: token_loss_sum(m, b, precision, CPU), model, small_batch)
    theirs, their_grads = loss_and_grads(full_logits_loss_sum, model, small_batch, precision=precision)
    assert abs(ours.item() - theirs.item()) <= loss_tol * abs(theirs.item())
    for name in ("lm_head.weight", "shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                 "decoder.block.7.layer.2.DenseReluDense.wo.weight"):
        assert relative_difference(our_grads[name], their_grads[name]) < grad_tol, name


def tiny_bart():
    """A random BART as small as the tiny T5: a pretrained non-T5 seq2seq model, as --model facebook/bart-base gives."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=128, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                        pad_token_id=0, eos_token_id=1, bos_token_id=2, decoder_start_token_id=2, dropout=0.0)
    torch.manual_seed(0)
    return BartForConditionalGeneration(config)


def test_a_bart_model_gets_its_own_forwards_loss_summed_over_the_label_tokens():
    model = tiny_bart().eval()
    batch = random_batches(1, batch_size=4, seed=3)[0]
    with torch.no_grad():
        mean = model(**batch).loss  # BART's own loss: the mean over the label tokens
        ours = token_loss_sum(model, batch, "fp32", CPU)
    assert ours.item() == pytest.approx(mean.item() * label_tokens(batch), rel=1e-6)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_bart_model_trains_in_the_loop_fully_or_with_lora_on_its_own_names(lora):
    model = tiny_bart()
    if lora:
        with pytest.raises(ValueError) as err:  # FLAN-T5's names: one line that names BART's
            add_lora(model, LoRAConfig(targets=("q", "v")))
        assert "\n" not in str(err.value) and "Did you mean 'q_proj'?" in str(err.value)
        assert "k_proj, lm_head, out_proj, q_proj, v_proj" in str(err.value)
        assert len(add_lora(model, LoRAConfig(targets=("q_proj", "v_proj"), r=4, alpha=8, dropout=0.0))) == 6  # 2 self- + 1 cross-attention
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = random_batches(4, batch_size=2)
    result = train(model, lambda epoch: batches, quick_config(max_steps=2, grad_accum=1), CPU,
                   val_batches=batches[:1])
    assert len(result.progress.losses) == 2 and all(math.isfinite(x) for x in result.progress.losses)
    assert result.progress.best_val_loss is not None and math.isfinite(result.progress.best_val_loss)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == ({n for n in before if "lora_" in n} if lora else {n for n, p in model.named_parameters()})
