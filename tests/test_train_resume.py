"""A run stopped and resumed ends exactly where a run never stopped ends: same losses, same weights, bit for bit
(fp32, CPU, dropout on, so the restored RNG state matters). Stopped by Ctrl-C, and by `kill -9`."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train_helpers import quick_config, random_batches, tiny_model
from train_loop import checkpoint as ckpt
from train_loop.loop import LOG_FILE, read_log, train
from train_loop.resume import set_rng_state

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
STEPS = 12  # 10 micro-batches, accumulation 2: 5 steps an epoch, so the runs cross two epoch ends


def batches_for_epoch(epoch):
    return random_batches(10, seed=epoch % 2)  # the data changes between epochs, as a reshuffle would


def model():
    return tiny_model(dropout_rate=0.1)


def config():
    return quick_config(max_steps=STEPS, save_every=2)


@pytest.fixture(scope="module")
def straight():
    """The run nobody stopped: (losses, final weights)."""
    m = model()
    result = train(m, batches_for_epoch, config(), CPU)
    return result.progress.losses, {n: p.detach().clone() for n, p in m.named_parameters()}


def assert_equal_to_straight(result, m, straight, folder):
    losses, weights = straight
    assert result.progress.losses == losses
    assert all(torch.equal(p, weights[n]) for n, p in m.named_parameters())
    steps = [r["step"] for r in read_log(folder / LOG_FILE) if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # the resumed log repeats no step and misses none


class InterruptAt(list):
    """A batch list that sends this process SIGINT (what Ctrl-C does) when the loop takes micro-batch `index`."""

    def __init__(self, batches, index):
        super().__init__(batches)
        self.index = index

    def __getitem__(self, key):
        if isinstance(key, slice) and key.start == self.index:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(key)


def test_ctrl_c_saves_a_checkpoint_and_resuming_gives_the_uninterrupted_run(tmp_path, straight):
    first = model()
    stopped = train(first, lambda e: InterruptAt(batches_for_epoch(e), 2) if e == 1 else batches_for_epoch(e),
                    config(), CPU, folder=tmp_path)
    assert stopped.interrupted and stopped.progress.step == 7  # Ctrl-C in step 7 (epoch 1, micro-batches 2-3)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000007.pt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    second = model()
    resumed = train(second, batches_for_epoch, config(), CPU, folder=tmp_path, resume=True)
    assert not resumed.interrupted
    assert_equal_to_straight(resumed, second, straight, tmp_path)


KILLED_RUN = """
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from tests.test_train_resume import batches_for_epoch, config, model
from train_loop.loop import train

class Slow(list):
    def __getitem__(self, key):
        time.sleep(0.2)
        return super().__getitem__(key)

train(model(), lambda e: Slow(batches_for_epoch(e)), config(), torch.device("cpu"), folder=Path(sys.argv[1]))
"""


def test_kill_9_after_a_checkpoint_then_resume_gives_the_uninterrupted_run(tmp_path, straight):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(REPO)], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        latest = ckpt.latest_checkpoint(tmp_path)
        if latest is not None and latest.name >= "step-00000004.pt":
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = ckpt.latest_checkpoint(tmp_path)
    assert killed_at is not None and killed_at.name < f"step-{STEPS:08d}.pt"
    # A half-written checkpoint, as a kill during torch.save leaves it: never a resume candidate.
    (tmp_path / ckpt.CHECKPOINT_DIR / "step-99999999.pt.tmp").write_bytes(b"half a checkpoint")
    assert ckpt.latest_checkpoint(tmp_path) == killed_at

    m = model()
    resumed = train(m, batches_for_epoch, config(), CPU, folder=tmp_path, resume=True)
    assert_equal_to_straight(resumed, m, straight, tmp_path)


def test_resume_needs_a_checkpoint_of_the_same_run(tmp_path):
    with pytest.raises(ValueError, match="--resume: no checkpoint"):
        train(model(), batches_for_epoch, config(), CPU, folder=tmp_path, resume=True)
    train(model(), batches_for_epoch, quick_config(max_steps=2), CPU, folder=tmp_path, fingerprint={"mode": "full"})
    with pytest.raises(ValueError, match="belongs to another run.*mode"):
        train(model(), batches_for_epoch, quick_config(max_steps=2), CPU, folder=tmp_path, resume=True,
              fingerprint={"mode": "lora"})
    with pytest.raises(ValueError, match="belongs to another run.*trainable"):  # another architecture
        train(tiny_model(d_ff=32), batches_for_epoch, quick_config(max_steps=2), CPU, folder=tmp_path, resume=True,
              fingerprint={"mode": "full"})


class FakeCuda:
    """torch.cuda's RNG functions on a machine with `count` GPUs, of which this process uses `current`."""

    def __init__(self, monkeypatch, count, current):
        self.count, self.current, self.set_on = count, current, {}
        self.states = {i: torch.full((8,), 10 * count + i, dtype=torch.uint8) for i in range(count)}
        for name in ("is_available", "device_count", "current_device", "get_rng_state", "set_rng_state",
                     "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def current_device(self):
        return self.current

    def _index(self, device):
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        index = self.current if device.index is None else device.index
        if not 0 <= index < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index} ({self.count} GPUs visible)")
        return index

    def get_rng_state(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state, device="cuda"):
        self.set_on[self._index(device)] = state.clone()

    def get_rng_state_all(self):
        return [self.get_rng_state(i) for i in range(self.count)]

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


def test_each_process_saves_and_restores_only_its_own_gpus_rng_so_fewer_gpus_can_resume(monkeypatch, tmp_path):
    saving = FakeCuda(monkeypatch, count=4, current=1)  # rank 1 of a run on 4 GPUs
    ckpt.save_atomic(ckpt.rng_state(), tmp_path / "rng.pt")
    resuming = FakeCuda(monkeypatch, count=2, current=1)  # rank 1 of the resume on 2 GPUs
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert list(resuming.set_on) == [1] and torch.equal(resuming.set_on[1], saving.states[1])


def test_an_older_checkpoint_with_every_gpus_rng_restores_this_processs_entry(monkeypatch):
    cpu_state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    written_by = [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]  # get_rng_state_all() on 4 GPUs
    resuming = FakeCuda(monkeypatch, count=2, current=1)
    set_rng_state({**cpu_state, "cuda": written_by})
    assert list(resuming.set_on) == [1] and torch.equal(resuming.set_on[1], written_by[1])
    resuming.set_on.clear()
    set_rng_state({**cpu_state, "cuda": []})  # written on a machine without CUDA: nothing to restore
    assert resuming.set_on == {}


def test_ctrl_c_in_the_last_step_is_reported_as_an_interruption_with_its_checkpoint(tmp_path):
    def ctrl_c_in_the_last_step(record):
        if record["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
    stopped = train(model(), batches_for_epoch, quick_config(max_steps=4, save_every=3), CPU, folder=tmp_path,
                    on_step=ctrl_c_in_the_last_step)
    assert stopped.interrupted and stopped.progress.step == 4
    assert stopped.checkpoint == ckpt.latest_checkpoint(tmp_path) and stopped.checkpoint.name == "step-00000004.pt"
    resumed = train(model(), batches_for_epoch, quick_config(max_steps=4, save_every=3), CPU, folder=tmp_path,
                    resume=True)
    assert not resumed.interrupted and resumed.progress.step == 4  # nothing left to train: the runner evaluates
