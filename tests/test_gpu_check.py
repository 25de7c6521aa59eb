"""bench/gpu_check.py needs a GPU to measure anything; without one it refuses in one line, before any work.
Section 6 measures each side's peak memory from the same baseline, or fails (a pretend allocator stands in for CUDA)."""
import argparse
import gc
import weakref

import pytest
import torch

from bench import gpu_check


def test_without_cuda_the_gpu_check_refuses_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "no CUDA GPU visible" in captured.err and "--device cpu --tiny" in captured.err


class FakeAllocator:
    """torch.cuda.memory_allocated as the bytes of the live Block objects: a model's weights, without a GPU."""

    def __init__(self, monkeypatch):
        self.live = weakref.WeakSet()
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: sum(b.nbytes for b in self.live))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)

    def block(self, mib: int):
        block = Block(mib * 2**20)
        self.live.add(block)
        return block


class Block:
    def __init__(self, nbytes):
        self.nbytes = nbytes


@pytest.fixture
def no_automatic_gc():
    """Only an explicit gc.collect() frees a reference cycle while the test runs."""
    gc.disable()
    yield
    gc.enable()


def test_memory_freed_only_by_gc_counts_as_released_and_memory_still_held_does_not(monkeypatch, no_automatic_gc):
    memory = FakeAllocator(monkeypatch)
    baseline = gpu_check.allocated_after_release()
    in_a_cycle = memory.block(300)
    in_a_cycle.me = in_a_cycle  # as accelerate's wrapped forward holds the trainer's model (bf16)
    del in_a_cycle
    assert torch.cuda.memory_allocated() == baseline + 300 * 2**20  # still there until gc.collect()
    gpu_check.check_released(baseline, "the LoRA side")
    still_held = memory.block(300)  # noqa: F841 (alive: a reference remains)
    with pytest.raises(AssertionError, match="300 MiB more than before the first side is still allocated before "
                                             "the LoRA side: its peak memory would be overstated"):
        gpu_check.check_released(baseline, "the LoRA side")


def _throughput_with(monkeypatch, tmp_path, trainer_side):
    """Section 6 on a pretend GPU, each side a fake that allocates a model of 300 MiB; the trainer's side leaves
    it as `trainer_side` says. Returns the sections that failed."""
    from bench import train_sides

    memory, kept = FakeAllocator(monkeypatch), []

    def side(name, leaves=None):
        def run(model, data, **kw):
            weights = memory.block(300)
            if leaves == "cycle":
                weights.me = weights
            elif leaves == "reference":
                kept.append(weights)
            return {"real_tokens": 100, "seconds": 1.0, "peak_memory_mb": 300.0, "precision": "bf16"}
        return run
    monkeypatch.setattr(train_sides, "run_ours", side("ours"))
    monkeypatch.setattr(train_sides, "run_theirs", side("trainer-best", trainer_side))
    cfg = argparse.Namespace(tiny=True, steps=3, small=tmp_path / "flan-t5-small", base=tmp_path / "flan-t5-base",
                             data=str(tmp_path), dev=torch.device("cuda"), precision="bf16")
    check = gpu_check.Check()
    check.section("6. training throughput", gpu_check.throughput, cfg)
    return check.failed


def test_section_6_measures_each_side_from_the_baseline_or_fails(monkeypatch, tmp_path, capsys, no_automatic_gc):
    assert _throughput_with(monkeypatch, tmp_path, "cycle") == []
    assert capsys.readouterr().out.count("peak 300 MiB") == 8
    assert _throughput_with(monkeypatch, tmp_path, "reference") == ["6. training throughput"]
    said = capsys.readouterr().out
    assert "FAILED: AssertionError: 300 MiB more than before the first side is still allocated before " \
           "flan-t5-small lora ours" in said
