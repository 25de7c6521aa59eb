"""Our loop equals the trainer it replaces: same batches, same AdamW, schedule, accumulation and clipping ->
the same logged losses (1e-4 relative) and the same final weights (1e-5), against `Seq2SeqTrainer` (full)
and `Seq2SeqTrainer` + peft (LoRA, same initial A and B). Tiny T5, dropout 0, fp32, CPU.

The trainer is fed exactly our batch list: a dataset whose items are whole batches, a DataLoader with
batch_size=1, no shuffling, and a collator that unwraps (the `get_train_dataloader` override below).
"""
import copy

import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from tests.train_helpers import max_weight_difference, quick_config, random_batches, tiny_model
from train_loop.loop import train

STEPS, LR, WARMUP, WD, CLIP = 20, 3e-3, 3, 0.01, 1.0


class _Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def per_token_loss(outputs, labels, num_items_in_batch=None):
    """The loss the Trainer intends under accumulation: summed token cross-entropy / tokens in the whole step."""
    logits = outputs["logits"]
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                           reduction="sum") / num_items_in_batch


def trainer_run(model, batches, tmp_path, grad_accum, steps=STEPS, lr=LR, compute_loss_func=None):
    """Run Seq2SeqTrainer on `batches` in order, logging every step; return the logged losses."""
    def unwrap(items):
        batch = dict(items[0])
        if compute_loss_func is not None:  # the Trainer pops labels then: T5 needs its decoder inputs given
            batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(batch["labels"])
        return batch

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=1, gradient_accumulation_steps=grad_accum,
        max_steps=steps, learning_rate=lr, warmup_steps=WARMUP, lr_scheduler_type="linear", weight_decay=WD,
        max_grad_norm=CLIP, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=0,
    )
    logs = _Losses()
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=batches, data_collator=unwrap,
                             callbacks=[logs], compute_loss_func=compute_loss_func)
    trainer.get_train_dataloader = lambda: torch.utils.data.DataLoader(batches, batch_size=1, shuffle=False,
                                                                       collate_fn=unwrap)
    trainer.train()
    return logs.losses


def assert_same_run(ours, theirs, our_model, their_weights):
    assert len(ours) == len(theirs) == STEPS
    rel = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
    assert rel < 1e-4, f"losses differ by {rel:.2e} relative"
    assert max_weight_difference(our_model, their_weights) < 1e-5
    assert ours[-1] < ours[0]  # it did train: equal runs that learn nothing would prove little


def test_full_mode_equals_seq2seq_trainer_with_accumulation_1(tmp_path):
    batches = random_batches(13)  # 13 micro-batches: epochs of 13 steps, the 20 steps cross an epoch end
    base = tiny_model()
    theirs = copy.deepcopy(base)
    their_losses = trainer_run(theirs, batches, tmp_path, grad_accum=1)
    result = train(base, lambda epoch: batches, quick_config(grad_accum=1), torch.device("cpu"))
    assert_same_run(result.progress.losses, their_losses, base, theirs)


def test_full_mode_equals_seq2seq_trainer_with_accumulation_2_and_per_token_loss(tmp_path):
    batches = random_batches(13)  # 13 micro-batches, accumulation 2: each epoch ends on a one-batch step
    base = tiny_model()
    theirs = copy.deepcopy(base)
    their_losses = trainer_run(theirs, batches, tmp_path, grad_accum=2, compute_loss_func=per_token_loss)
    result = train(base, lambda epoch: batches, quick_config(grad_accum=2), torch.device("cpu"))
    assert_same_run(result.progress.losses, their_losses, base, theirs)


def test_stock_trainer_on_t5_sums_micro_batch_means_under_accumulation(tmp_path):
    """The trap the loop's docstring describes: T5 ignores num_items_in_batch, the Trainer then skips its
    division by grad_accum, and logs (and backpropagates) the sum of the two micro-batch means."""
    batches = random_batches(2)
    model = tiny_model()
    with torch.no_grad():
        means = [model(**b).loss.item() for b in batches]
    stock = trainer_run(copy.deepcopy(model), batches, tmp_path, grad_accum=2, steps=1, lr=1e-9)
    ours = train(model, lambda epoch: batches, quick_config(grad_accum=2, max_steps=1), torch.device("cpu"))
    assert abs(stock[0] - sum(means)) < 1e-5 * sum(means)
    tokens = [int((b["labels"] != -100).sum()) for b in batches]
    per_token = sum(m * n for m, n in zip(means, tokens)) / sum(tokens)
    assert abs(ours.progress.losses[0] - per_token) < 1e-5 * per_token


# --- LoRA mode: waits on the lora/ merge (lora.layer.add_lora) -------------------------------------------------

def test_lora_mode_equals_seq2seq_trainer_with_peft(tmp_path):
    from peft import LoraConfig, get_peft_model

    from lora.layer import LoRAConfig, add_lora

    batches = random_batches(13)
    base = tiny_model()
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(targets=("q", "v"), r=4, alpha=8, dropout=0.0))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                           target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"))
    torch.manual_seed(5)
    with torch.no_grad():  # the same A and B in both, B not zero, so both factors get gradients from step 1
        for name, module in ours.named_modules():
            if hasattr(module, "lora_A"):
                module.lora_B.normal_(std=0.02)
                peft_module = theirs.base_model.model.get_submodule(name)
                peft_module.lora_A["default"].weight.copy_(module.lora_A)
                peft_module.lora_B["default"].weight.copy_(module.lora_B)
    their_losses = trainer_run(theirs, batches, tmp_path, grad_accum=2, compute_loss_func=per_token_loss)
    result = train(ours, lambda epoch: batches, quick_config(grad_accum=2), torch.device("cpu"))
    their_weights = {name: p for name, p in theirs.merge_and_unload().state_dict().items()}
    from lora.merge import unload_lora

    merged = unload_lora(ours, merge=True)
    assert_same_run(result.progress.losses, their_losses, merged, their_weights)
