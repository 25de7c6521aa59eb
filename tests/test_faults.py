"""Faults a user can run into end in one line on stderr and exit code 2, naming the file (and line) at fault; a
damaged checkpoint is found, named, and --resume continues from the whole one before it; nothing saved is
deleted, and a run that fails before it writes anything leaves no empty folder behind."""
import json
import logging

import pytest
import torch

import run
from tests.conftest import SMALL_DIR
from tests.train_helpers import narrow_model, quick_config, random_batches, tiny_model
from train_loop import checkpoint as ckpt
from train_loop.resume import damage, resumable_checkpoint
from train_loop.loop import train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No machine of this project reaches the hub: answer at once instead of trying a connection."""
    import model.hub

    monkeypatch.setattr(model.hub, "hub_is_reachable", lambda timeout=3.0: False)


def fails(argv, capsys) -> str:
    """run.py's main gives exit code 2 and one error line (besides the --random-init warning); returns it."""
    assert run.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("--random-init:")]
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


def data_folder(tmp_path, **files: bytes):
    """A DialogSum folder in the official layout with two dialogues per split, some files replaced by `files`."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, name in (("train", "dialogsum.train.jsonl"), ("dev", "dialogsum.dev.jsonl"),
                        ("test", "dialogsum.test.jsonl")):
        rows = [{"fname": f"{split}_{i}", "dialogue": f"#Person1#: Hello {i}.\n#Person2#: Hi.",
                 **({"summary1": "They greet.", "summary2": "Hello.", "summary3": "Hi."} if split == "test"
                    else {"summary": "They greet."}), "topic": "greeting"} for i in range(2)]
        (folder / name).write_bytes(files.get(split, "".join(json.dumps(r) + "\n" for r in rows).encode()))
    return folder


def zero_shot(data, out):
    return ["--mode", "zero-shot", "--model", str(SMALL_DIR), "--random-init", "--data", str(data),
            "--output-dir", str(out), "--max-new-tokens", "2"]


# --- data files ----------------------------------------------------------------------------------------------------

def test_an_empty_test_file_names_the_file(tmp_path, capsys):
    data = data_folder(tmp_path, test=b"")
    line = fails(zero_shot(data, tmp_path / "out"), capsys)
    assert f"{data / 'dialogsum.test.jsonl'} is empty" in line
    assert not (tmp_path / "out").exists()  # no empty run folder left behind


def test_a_file_of_blank_lines_is_empty_too(tmp_path, capsys):
    data = data_folder(tmp_path, dev=b"\n\n  \n")
    line = fails(zero_shot(data, tmp_path / "out") + ["--split", "validation"], capsys)
    assert f"{data / 'dialogsum.dev.jsonl'} is empty" in line


def test_invalid_utf8_names_the_file_and_line(tmp_path, capsys):
    good = json.dumps({"fname": "test_0", "dialogue": "#Person1#: Hi.", "summary1": "They greet."})
    bad = good.replace("Hi.", "Hi \xe9.").encode("latin-1")  # é in Latin-1: the byte 0xe9 alone is not UTF-8
    data = data_folder(tmp_path, test=(good + "\n" + good + "\n").encode() + bad + b"\n")
    line = fails(zero_shot(data, tmp_path / "out"), capsys)
    assert f"{data / 'dialogsum.test.jsonl'}:3: not valid UTF-8" in line


def test_invalid_utf8_in_a_csv_names_the_file_and_line(tmp_path, capsys):
    folder = tmp_path / "hub-layout"
    folder.mkdir()
    (folder / "test.csv").write_bytes(b"id,dialogue,summary,topic\ntest_0,Hi.,They greet.,t\ntest_1,H\xffi.,x,t\n")
    line = fails(zero_shot(folder, tmp_path / "out"), capsys)
    assert f"{folder / 'test.csv'}:3: not valid UTF-8" in line


# --- damaged checkpoints -------------------------------------------------------------------------------------------

def checkpoints_of_a_run(folder, steps=6, **fingerprint):
    """A tiny run that saves every 2 steps: checkpoints step-4 and step-6 are kept (ckpt.KEEP = 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = tiny_model(dropout_rate=0.1)
    train(m, lambda epoch: random_batches(6, seed=epoch), quick_config(max_steps=steps, save_every=2), CPU,
          folder=folder, fingerprint=fingerprint or None)
    return m


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path.read_bytes()


def test_the_two_newest_checkpoints_are_kept_each_with_its_checksum(tmp_path):
    checkpoints_of_a_run(tmp_path)
    names = sorted(p.name for p in (tmp_path / ckpt.CHECKPOINT_DIR).iterdir())
    assert names == ["step-00000004.pt", "step-00000004.pt.sha256", "step-00000006.pt",
                     "step-00000006.pt.sha256"]
    assert all(damage(p) is None for p in (tmp_path / ckpt.CHECKPOINT_DIR).glob("step-*.pt"))


@pytest.mark.parametrize("how", ["truncated", "one byte changed", "truncated, no checksum file"])
def test_a_damaged_checkpoint_is_found(tmp_path, how):
    checkpoints_of_a_run(tmp_path)
    path = ckpt.checkpoint_path(tmp_path, 6)
    if how == "one byte changed":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        assert "SHA-256 does not match" in damage(path)
    else:
        truncate(path)
        if "no checksum" in how:  # a checkpoint written before checksums existed: it must at least load
            ckpt.checksum_path(path).unlink()
            assert "torch.load cannot read it" in damage(path)
        else:
            assert "SHA-256 does not match" in damage(path)


def test_resume_skips_a_damaged_checkpoint_keeps_it_and_ends_as_the_straight_run(tmp_path, caplog):
    straight = checkpoints_of_a_run(tmp_path / "straight")
    checkpoints_of_a_run(tmp_path / "run")
    newest = ckpt.checkpoint_path(tmp_path / "run", 6)
    damaged_bytes = truncate(newest)
    with caplog.at_level(logging.WARNING, logger="train_loop"):
        assert resumable_checkpoint(tmp_path / "run") == ckpt.checkpoint_path(tmp_path / "run", 4)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"checkpoint {newest} is damaged" in said[0] and "step-00000004.pt" in said[0]
    kept = newest.with_name(newest.name + ".damaged")
    assert kept.read_bytes() == damaged_bytes  # renamed aside, never deleted
    resumed = tiny_model(dropout_rate=0.1)
    result = train(resumed, lambda epoch: random_batches(6, seed=epoch), quick_config(max_steps=6, save_every=2),
                   CPU, folder=tmp_path / "run", resume=True)
    assert result.progress.step == 6
    assert all(torch.equal(p, dict(straight.named_parameters())[n]) for n, p in resumed.named_parameters())
    assert kept.read_bytes() == damaged_bytes  # the new step-6 checkpoint's clean-up left it alone


def test_resume_with_every_checkpoint_damaged_names_them_and_deletes_nothing(tmp_path, capsys):
    checkpoints_of_a_run(tmp_path, mode="full", model=str(SMALL_DIR))
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    for step in (4, 6):
        truncate(ckpt.checkpoint_path(tmp_path, step))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    line = fails(["--mode", "full", "--model", str(SMALL_DIR), "--output-dir", str(tmp_path), "--resume"], capsys)
    assert "no whole checkpoint" in line
    assert f"{folder / 'step-00000006.pt'} is damaged" in line and f"{folder / 'step-00000004.pt'} is damaged" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_resume_through_run_py_reports_the_damaged_checkpoint_and_continues(tmp_path, capsys):
    from tests.test_run_training import small_run

    model_dir = narrow_model(tmp_path)
    out = tmp_path / "lora"
    assert run.main(small_run("lora", model_dir, out)) == 0
    newest = ckpt.checkpoint_path(out, 4)
    damaged_bytes = truncate(newest, keep=0.9)
    capsys.readouterr()
    assert run.main(small_run("lora", model_dir, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is damaged" in err and f"Resuming from {ckpt.checkpoint_path(out, 2)}" in err
    assert newest.with_name(newest.name + ".damaged").read_bytes() == damaged_bytes
    assert damage(newest) is None  # the resumed run wrote a whole step-4 again


# --- no empty run folder -------------------------------------------------------------------------------------------

def test_a_run_that_fails_before_training_leaves_no_folder_it_created(tmp_path, capsys):
    out = tmp_path / "new" / "runs" / "lora"
    line = fails(["--mode", "lora", "--model", str(tmp_path / "no-model"), "--output-dir", str(out)], capsys)
    assert "no-model does not exist" in line
    assert not (tmp_path / "new").exists()  # the folder and the parents this run made are gone


def test_the_hub_offline_leaves_no_folder_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output folder, runs/lora, goes here
    line = fails(["--mode", "lora", "--model", "google/flan-t5-small", "--data", str(data_folder(tmp_path))], capsys)
    assert "cannot reach the Hugging Face hub for 'google/flan-t5-small'" in line
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_existed_is_never_removed(tmp_path, capsys):
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir()
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    for out in (empty, used):
        fails(["--mode", "lora", "--model", str(tmp_path / "no-model"), "--output-dir", str(out)], capsys)
    assert empty.is_dir() and (used / "notes.txt").read_text() == "mine"


# --- model folders -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, message", [
    ("{not json", "config.json"),  # the tokenizer reads it first: transformers names the file
    ('{"model_type": "bert", "hidden_size": 8}', "config.json describes a 'bert' model"),
])
def test_a_broken_model_folder_is_named_not_blamed_on_the_hub(tmp_path, capsys, config, message):
    folder = narrow_model(tmp_path)
    (folder / "config.json").write_text(config)
    argv = ["--mode", "zero-shot", "--model", str(folder), "--random-init", "--data", str(data_folder(tmp_path)),
            "--output-dir", str(tmp_path / "out")]
    line = fails(argv, capsys)
    assert f"model folder {folder} cannot be loaded" in line and message in line and "hub" not in line
    assert not (tmp_path / "out").exists()


def test_a_split_too_small_for_the_processes_names_the_flag(tmp_path):
    from prompting.dialogsum import DataConfig
    from modes.train import examples_for

    data = DataConfig(str(data_folder(tmp_path)), seed=0, max_val_samples=1)
    with pytest.raises(ValueError, match=r"--max-val-samples 1: 1 validation dialogue\(s\) make no batch for 2 proc"):
        examples_for(data, "validation", processes=2)


def test_a_second_damaged_checkpoint_of_the_same_step_does_not_replace_the_first(tmp_path):
    checkpoints_of_a_run(tmp_path)
    newest = ckpt.checkpoint_path(tmp_path, 6)
    first = truncate(newest)
    resumable_checkpoint(tmp_path)
    checkpoints_of_a_run(tmp_path)  # writes step-6 again (a fresh run into the same folder, for the test's sake)
    second = truncate(newest, keep=0.3)
    resumable_checkpoint(tmp_path)
    assert newest.with_name(newest.name + ".damaged").read_bytes() == first
    assert newest.with_name(newest.name + ".damaged.1").read_bytes() == second
