"""bench/gpu_check.py needs a GPU to measure anything; without one it refuses in one line, before any work."""
import torch

from bench import gpu_check


def test_without_cuda_the_gpu_check_refuses_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "no CUDA GPU visible" in captured.err and "--device cpu --tiny" in captured.err
