"""The loop's parts, each against the reference it claims to follow, and its guards against bad runs."""
import json
import math

import pytest
import torch
from transformers import Seq2SeqTrainer, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from tests.train_helpers import quick_config, random_batches, tiny_model
from train_loop import checkpoint as ckpt
from train_loop.loop import LOG_FILE, NonFiniteLoss, TrainConfig, read_log, train
from train_loop.step import OptimConfig, build_optimizer, build_scheduler, decays
from model.device import choose_precision

CPU = torch.device("cpu")


def test_weight_decay_skips_exactly_the_parameters_the_trainer_skips():
    model = tiny_model()
    theirs = set(Seq2SeqTrainer.get_decay_parameter_names(None, model))
    ours = {name for name, _ in model.named_parameters() if decays(model, name)}
    assert ours == {name for name, _ in model.named_parameters() if name in theirs}
    assert "encoder.final_layer_norm.weight" not in ours and "shared.weight" in ours


@pytest.mark.parametrize("schedule, reference", [("linear", get_linear_schedule_with_warmup),
                                                 ("cosine", get_cosine_schedule_with_warmup)])
def test_schedule_matches_transformers_at_every_step(schedule, reference):
    def lrs(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched = make(opt)
        seen = []
        for _ in range(25):
            seen.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return seen

    ours = lrs(lambda opt: build_scheduler(opt, OptimConfig(lr=0.5, warmup_steps=4, schedule=schedule), 20))
    theirs = lrs(lambda opt: reference(opt, num_warmup_steps=4, num_training_steps=20))
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert ours[0] == 0.0 and max(ours) == 0.5 and ours[20] == 0.0  # starts at 0, peaks after warmup, ends at 0


def test_adafactor_moves_each_weight_by_the_same_share_of_its_scale_and_adamw_does_not():
    """Why pretraining uses Adafactor: T5's embedding starts at std 1 and its q at std (d_model d_kv)^-1/2. One step
    on the same gradient: Adafactor changes both by about the same share of their RMS, AdamW by about lr each, so
    ~100 times more of q than of the embedding."""
    def relative_steps(optimizer):
        torch.manual_seed(0)
        model = torch.nn.Module()
        model.embedding = torch.nn.Parameter(torch.randn(64, 32))          # std 1
        model.q = torch.nn.Parameter(torch.randn(32, 32) * 0.01)           # std 0.01
        before = [p.detach().clone() for p in (model.embedding, model.q)]
        opt = build_optimizer(model, OptimConfig(lr=1e-2, optimizer=optimizer), CPU)
        for p in (model.embedding, model.q):
            p.grad = torch.randn_like(p)
        opt.step()
        return [((p - b).pow(2).mean() / b.pow(2).mean()).sqrt().item()
                for p, b in zip((model.embedding, model.q), before)]

    embedding, q = relative_steps("adafactor")
    assert embedding == pytest.approx(1e-2, rel=0.3) and q == pytest.approx(1e-2, rel=0.3)
    embedding, q = relative_steps("adamw")
    assert q / embedding > 50


def test_an_unknown_optimizer_and_loraplus_with_adafactor_are_refused():
    with pytest.raises(ValueError, match="--optimizer 'sgd'"):
        OptimConfig(lr=1e-3, optimizer="sgd")
    with pytest.raises(ValueError, match="--loraplus-lr-ratio"):
        OptimConfig(lr=1e-3, optimizer="adafactor", loraplus_lr_ratio=16)


def test_frozen_weights_get_no_gradients_and_no_optimiser_state(tmp_path):
    """LoRA mode's promise, with a stand-in: everything frozen but the attention q/v weights."""
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith((".q.weight", ".v.weight")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3), CPU)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)

    batches = random_batches(4)
    train(model, lambda epoch: batches, quick_config(max_steps=4, save_every=2), CPU, folder=tmp_path)
    for name, p in model.named_parameters():
        assert p.grad is None
        assert torch.equal(p, before[name]) != (name in trainable), name
    state = torch.load(ckpt.latest_checkpoint(tmp_path), weights_only=True)
    assert set(state["weights"]) == trainable
    assert len(state["optimizer"]["state"]) == len(trainable)


def test_bf16_autocast_trains_on_cpu_with_fp32_master_weights():
    batches = random_batches(4)
    fp32, bf16 = tiny_model(), tiny_model()
    a = train(fp32, lambda e: batches, quick_config(max_steps=4), CPU).progress.losses
    b = train(bf16, lambda e: batches, quick_config(max_steps=4, precision="bf16"), CPU).progress.losses
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert all(math.isfinite(x) for x in b)
    assert a != b  # autocast really ran the matmuls in bf16 ...
    assert b == pytest.approx(a, rel=2e-2)  # ... and bf16 keeps the loss within its 8-bit mantissa's reach


def test_validation_runs_every_n_steps_and_at_epoch_ends_and_keeps_the_best(tmp_path):
    batches, val = random_batches(6), random_batches(2, seed=9)
    model = tiny_model()
    result = train(model, lambda e: batches, quick_config(max_steps=7, eval_every=2), CPU, folder=tmp_path,
                   val_batches=val)
    steps = [s for s, _ in result.progress.val_losses]
    assert steps == [2, 3, 4, 6, 7]  # every 2, epoch ends (3 steps of 2 micro-batches each: 3, 6), the last step
    best_step, best = min(result.progress.val_losses, key=lambda sv: sv[1])
    assert (result.progress.best_step, result.progress.best_val_loss) == (best_step, best)
    assert ckpt.load_best(tmp_path, model)
    from train_loop.loop import validation_loss

    assert validation_loss(model, val, "fp32", CPU) == pytest.approx(best, rel=1e-6)


def test_step_log_has_one_line_per_step_with_its_figures(tmp_path):
    batches = random_batches(4)
    result = train(tiny_model(), lambda e: batches, quick_config(max_steps=3), CPU, folder=tmp_path)
    records = [r for r in read_log(tmp_path / LOG_FILE) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["loss"] for r in records] == result.progress.losses
    assert records[0]["lr"] == 0.0 and records[1]["lr"] == pytest.approx(3e-3 / 3)  # warmup 3 starts at 0
    assert all(r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 and r["grad_norm"] > 0 for r in records)
    json.dumps(records)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    batches = random_batches(8)
    model = tiny_model()
    calls = {"n": 0}

    def plant_nan(module, inputs, output):  # the 7th forward pass (step 4's first micro-batch) turns to NaN
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 7 else output

    model.lm_head.register_forward_hook(plant_nan)
    with pytest.raises(NonFiniteLoss, match=r"step 4: the loss is nan.*step-00000002\.pt"):
        train(model, lambda e: batches, quick_config(max_steps=8, save_every=2), CPU, folder=tmp_path)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000002.pt"
    saved = torch.load(ckpt.latest_checkpoint(tmp_path), weights_only=True)
    assert all(torch.isfinite(w).all() for w in saved["weights"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never reached the weights


def test_impossible_settings_are_refused_with_the_flag_named(monkeypatch):
    with pytest.raises(ValueError, match="--lr -0.1"):
        OptimConfig(lr=-0.1)
    with pytest.raises(ValueError, match="--grad-accum 0"):
        TrainConfig(optim=OptimConfig(lr=1e-3), grad_accum=0)
    with pytest.raises(ValueError, match="--max-steps 0"):
        TrainConfig(optim=OptimConfig(lr=1e-3), max_steps=0)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", CPU)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # a CPU with native bf16 (fake)
    assert choose_precision("auto", CPU)[0] == "bf16"


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="does not support bfloat16"):
        choose_precision("bf16", torch.device("cuda"))
    assert choose_precision("auto", torch.device("cuda"))[0] == "fp32"
