"""`--select-by rouge*` keeps the weights of the validation with the highest ROUGE, not those of the lowest loss;
`--early-stopping-patience N` stops after N validations without a better one, and a resume does not train on."""
import pytest
import torch

from tests.train_helpers import quick_config, random_batches, tiny_model
from train_loop import checkpoint as ckpt
from train_loop.loop import train, validation_loss

CPU = torch.device("cpu")


class ScriptedRouge:
    """val_rouge(model) giving the scripted ROUGE-L of each validation in turn, and remembering the weights it saw."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, model):
        self.seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        f = self.scores[len(self.seen) - 1]
        return {"rouge1": f, "rouge2": f, "rougeL": f, "rougeLsum": f}


def test_select_by_rouge_keeps_the_constructed_best_evaluation(tmp_path):
    batches, val = random_batches(8), random_batches(2, seed=9)
    rouge = ScriptedRouge([0.2, 0.9, 0.4, 0.9, 0.1])  # the 2nd validation is best; the 4th only equals it
    model = tiny_model()
    result = train(model, lambda e: batches, quick_config(max_steps=5, grad_accum=1, eval_every=1,
                                                           select_by="rougeL"), CPU, folder=tmp_path,
                   val_batches=val, val_rouge=rouge)
    p = result.progress
    assert (p.best_step, p.best_score) == (2, 0.9)
    losses = dict((step, loss) for step, loss in p.val_losses)
    assert p.best_val_loss == losses[2] and min(losses, key=losses.get) != 2  # the loss alone would choose another
    assert ckpt.load_best(tmp_path, model)
    assert all(torch.equal(param, rouge.seen[1][n]) for n, param in model.named_parameters())
    assert validation_loss(model, val, "fp32", CPU) == pytest.approx(losses[2], rel=1e-6)


def test_early_stopping_stops_after_patience_validations_without_a_better_one_and_a_resume_stays(tmp_path):
    batches, val = random_batches(8), random_batches(2, seed=9)
    config = quick_config(max_steps=8, grad_accum=1, eval_every=1, select_by="rouge1", patience=2)
    first = train(tiny_model(), lambda e: batches, config, CPU, folder=tmp_path, val_batches=val,
                  val_rouge=ScriptedRouge([0.5, 0.6, 0.6, 0.55, 0.9, 0.9, 0.9, 0.9]))
    p = first.progress
    assert (p.step, p.best_step, p.stopped_early) == (4, 2, True)  # 0.6 at step 2, then two validations no better
    assert first.checkpoint is not None and first.total_steps == 8
    again = train(tiny_model(), lambda e: batches, config, CPU, folder=tmp_path, val_batches=val, resume=True,
                  val_rouge=ScriptedRouge([]))
    assert (again.progress.step, again.progress.best_step) == (4, 2)  # nothing more trained, nothing re-chosen
    at_the_end = train(tiny_model(), lambda e: batches, quick_config(max_steps=4, grad_accum=1, eval_every=1,
                                                                     select_by="rouge1", patience=2), CPU,
                       val_batches=val, val_rouge=ScriptedRouge([0.5, 0.6, 0.6, 0.55]))
    assert not at_the_end.progress.stopped_early  # patience ran out at the last step: not an early stop


def test_loss_selection_needs_no_summaries_and_rouge_selection_refuses_to_run_without(tmp_path):
    with pytest.raises(ValueError, match="--select-by rouge2 needs summaries of the validation dialogues"):
        train(tiny_model(), lambda e: random_batches(2), quick_config(max_steps=1, select_by="rouge2"), CPU)
    with pytest.raises(ValueError, match="--select-by bleu: expected one of loss, rouge1"):
        quick_config(select_by="bleu")
    with pytest.raises(ValueError, match="--early-stopping-patience -1"):
        quick_config(patience=-1)
