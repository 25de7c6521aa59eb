"""`torchrun --nproc_per_node 2 run.py ...` (gloo, CPU) trains as one process does: the same losses, one adapter
(or model) equal to the single-process one, with DDP and with FSDP; a process that dies leaves one clear message
from rank 0 and a checkpoint that two processes resume to the uninterrupted run's end, as after Ctrl-C; one process
may not resume it.

Every run is made once (module fixture): two single-process runs in this process, then one torchrun of
tests/dist_worker.py for seven two-process runs (one stopped by Ctrl-C in step 3; the last loses rank 1 in step 3),
then one torchrun to resume both.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import run
from tests.conftest import DATA_DIR, REPO, SMALL_DIR
from train_loop.distributed import Parallel
from train_loop.loop import LOG_FILE, read_log

# flan-t5-small's tokenizer and config, narrowed (d_model 64, 1+1 blocks) and without dropout: with dropout the
# processes draw other masks than one process would, and only a dropout-free run can equal the single-process one.
NARROW = dict(d_model=64, d_ff=128, num_heads=2, d_kv=32, num_layers=1, num_decoder_layers=1, dropout_rate=0.0)


def flags(model_dir, out, *extra):
    """Global batch 8 (4 per process), accumulation 2: 4 steps over 2 epochs of 32 dialogues, a checkpoint every 2."""
    return ["--model", str(model_dir), "--random-init", "--data", str(DATA_DIR), "--max-train-samples", "32",
            "--max-val-samples", "8", "--max-eval-samples", "6", "--max-steps", "4", "--batch-size", "8",
            "--grad-accum", "2", "--max-input-tokens", "64", "--max-target-tokens", "24", "--max-new-tokens", "4",
            "--save-every", "2", "--precision", "fp32", "--device", "cpu", "--output-dir", str(out), *extra]


def torchrun(commands: list[dict], folder) -> subprocess.CompletedProcess:
    path = folder / f"commands-{len(list(folder.glob('commands-*')))}.json"
    path.write_text(json.dumps(commands))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "tests/dist_worker.py", str(path)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    model_dir = root / "narrow-flan-t5"
    model_dir.mkdir()
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SMALL_DIR / name, model_dir / name)
    (model_dir / "config.json").write_text(json.dumps({**json.loads((SMALL_DIR / "config.json").read_text()), **NARROW}))

    lora = lambda name, *extra: ["--mode", "lora", *flags(model_dir, root / name, "--lora-r", "4", *extra)]  # noqa: E731
    full = lambda name, *extra: ["--mode", "full", *flags(model_dir, root / name, *extra)]  # noqa: E731
    assert run.main(lora("one-lora", "--lora-dropout", "0")) == 0
    assert run.main(full("one-full")) == 0
    first = torchrun([
        {"argv": lora("two-lora", "--lora-dropout", "0")},
        {"argv": lora("two-lora-fsdp", "--lora-dropout", "0", "--fsdp")},
        {"argv": full("two-full-fsdp", "--fsdp")},
        {"argv": full("two-full-fsdp-stopped", "--fsdp"), "interrupt_in_step": 3},
        # dropout on, and the processes' RNG states made to differ (dist_worker.py): each must get its own back
        {"argv": lora("two-lora-dropout", "--lora-dropout", "0.1"), "uneven_rng": True},
        # one dialogue to summarise on two processes: rank 1's share is empty
        {"argv": lora("two-eval-one", "--max-steps", "1", "--max-eval-samples", "1")},
        {"argv": lora("two-dies", "--lora-dropout", "0.1"), "uneven_rng": True, "die": {"rank": 1, "step": 3}},
    ], root)
    with contextlib.redirect_stderr(io.StringIO()) as said:  # one process, before the resume
        refused = (run.main(lora("two-dies", "--lora-dropout", "0.1", "--resume")), said.getvalue())
    resumed = torchrun([{"argv": lora("two-dies", "--lora-dropout", "0.1", "--resume"), "uneven_rng": True},
                        {"argv": full("two-full-fsdp-stopped", "--fsdp", "--resume")}], root)
    return {"root": root, "first": first, "resumed": resumed, "refused": refused}


def losses(folder, key="loss") -> list[float]:
    return [r[key] for r in read_log(folder / LOG_FILE) if key in r]


def weights(folder) -> dict[str, torch.Tensor]:
    name = "adapter/adapter_model.safetensors" if (folder / "adapter").is_dir() else "model/model.safetensors"
    return load_file(folder / name)


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_log_each_step_once_and_print_once(runs):
    first = runs["first"]
    assert first.stdout.count("fine-tuning of") == 7, first.stdout  # one line per run, from rank 0 only
    assert "on 2 processes (4 each)" in first.stdout
    for name in ("two-lora", "two-lora-fsdp", "two-full-fsdp", "two-lora-dropout"):
        assert [r["step"] for r in read_log(runs["root"] / name / LOG_FILE) if "loss" in r] == [1, 2, 3, 4], name


def test_two_processes_give_the_single_process_losses_and_exactly_one_equal_adapter(runs):
    one, two = runs["root"] / "one-lora", runs["root"] / "two-lora"
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    # AdamW would hide a gradient off by a constant factor (its step is scale-free); the logged norm does not
    assert losses(two, "grad_norm") == pytest.approx(losses(one, "grad_norm"), rel=1e-4)
    assert max_difference(weights(two), weights(one)) < 1e-5
    assert len(list(two.rglob("adapter_config.json"))) == 1
    assert [p.name for p in two.iterdir() if p.suffix == ".tmp"] == []
    one_metrics, two_metrics = (json.loads((f / "metrics.json").read_text()) for f in (one, two))
    assert (two_metrics["processes"], one_metrics["processes"]) == (2, 1)
    # each process summarised every other dialogue; rank 0 put them back in order for one ROUGE
    assert (two / "predictions.csv").read_text() == (one / "predictions.csv").read_text()
    assert two_metrics["rouge1"] == one_metrics["rouge1"] and two_metrics["examples"] == 6


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_fsdp_on_two_processes_gives_the_single_process_losses_and_weights(runs, mode):
    one, two = runs["root"] / f"one-{mode}", runs["root"] / f"two-{mode}-fsdp"
    assert json.loads((two / "metrics.json").read_text())["fsdp"] is True
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    assert losses(two, "grad_norm") == pytest.approx(losses(one, "grad_norm"), rel=1e-4)
    assert max_difference(weights(two), weights(one)) < 1e-5


def test_fewer_dialogues_to_summarise_than_processes_still_evaluate_them(runs):
    metrics = json.loads((runs["root"] / "two-eval-one" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["examples"] == 1
    assert (runs["root"] / "two-eval-one" / "predictions.csv").is_file()


def test_a_dying_process_gives_one_message_from_rank_0_and_keeps_the_last_checkpoint(runs):
    first = runs["first"]
    assert first.returncode != 0
    assert first.stderr.count("run.py: error") == 1, first.stderr[-3000:]  # rank 0's; rank 1 died without a word
    said = first.stderr[first.stderr.index("run.py: error"):].splitlines()[0]
    assert "the run on 2 processes stopped" in said and "torchrun's report" in said
    assert "checkpoints/step-00000002.pt: rerun the same command with --resume" in said
    assert "exitcode  : 3" in first.stderr  # torchrun names the process that died


def test_resume_on_two_processes_equals_the_uninterrupted_two_process_run(runs):
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
    straight, resumed = runs["root"] / "two-lora-dropout", runs["root"] / "two-dies"
    assert losses(resumed) == losses(straight)
    assert max_difference(weights(resumed), weights(straight)) == 0


def test_ctrl_c_stops_every_process_after_the_same_step_and_fsdp_resumes_to_the_straight_run(runs):
    first = runs["first"]
    assert first.stdout.count("stopped after step 3; checkpoint") == 1 and first.stderr.count("run.py: interrupted") == 1
    straight, resumed = runs["root"] / "two-full-fsdp", runs["root"] / "two-full-fsdp-stopped"
    assert losses(resumed) == losses(straight)
    assert max_difference(weights(resumed), weights(straight)) == 0


def test_one_process_may_not_resume_a_two_process_checkpoint(runs):
    code, stderr = runs["refused"]
    assert code == 2 and "was written by 2 processes; this run has 1 process. Resume with the same number" in stderr


def test_bad_settings_for_several_processes_are_refused_before_any_process_waits(tmp_path, monkeypatch, capsys):
    out = ["--output-dir", str(tmp_path / "out")]
    assert run.main(["--mode", "lora", "--fsdp", *out]) == 2
    assert "--fsdp shards the model over several processes: launch run.py with torchrun" in capsys.readouterr().err
    assert run.main(["--mode", "zero-shot", "--fsdp", *out]) == 2
    assert "use it with --mode full|lora" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert run.main(["--mode", "lora", "--batch-size", "8", *out]) == 2
    assert "--batch-size 8 is the global batch: it must split evenly over the 3 processes" in capsys.readouterr().err
    assert run.main(["--mode", "few-shot", *out]) == 2
    assert "only --mode full|lora runs under torchrun" in capsys.readouterr().err


def test_a_single_process_is_its_own_share_and_sum():
    from train_loop.loop import OneProcess

    single = OneProcess()
    assert single.share([1, 2, 3]) == [1, 2, 3] and single.gather_shares([1, 2, 3]) == [1, 2, 3]
    assert single.total(7) == 7 and not single.any(False) and single.run_on_main(lambda: "rank 0") == "rank 0"
    assert (single.rank, single.world_size, single.main, single.max(2.5)) == (0, 1, True, 2.5)
    two = Parallel(rank=1, world_size=2)
    assert two.share([0, 1, 2, 3, 4]) == [1, 3]
    assert set(dir(two)) >= {name for name in dir(single) if not name.startswith("_")}  # the same methods
