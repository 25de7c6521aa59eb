"""What tests/test_distributed.py launches with torchrun: several run.py commands in a row in the same processes, so
the test pays for starting Python only once. They share one process group: run.py joins it in the first command
and would leave it after each, but joining the default group again in the same processes sometimes hangs
(torch 2.13, gloo), so it is left once, after the last command.

    torchrun --standalone --nproc_per_node 2 tests/dist_worker.py commands.json

commands.json: a list of {"argv": [...run.py arguments...], "die": {"rank": r, "step": s}, "interrupt_in_step": s,
"uneven_rng": true}.

* "die": process r exits abruptly (os._exit, as a crash or the OOM killer would end it) in optimiser step s, after
  its backward and before its update: the others are then waiting on it in the next collective.
* "interrupt_in_step": every process sends itself SIGINT in step s, as torchrun does to all of them on Ctrl-C; the
  run stops after that step with a checkpoint, run.py returns 130, and the next command follows.
* "uneven_rng": rank 1 draws a few extra random numbers in step 1, so its RNG state differs from rank 0's from then
  on. On CUDA that happens by itself (a dropout mask advances the generator by its size, and the shares differ in
  size); on CPU each dropout mask takes one draw from the generator whatever its size, so both processes' states
  stay equal, and a resume that gave every process rank 0's state would go unnoticed.
"""
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run  # noqa: E402
from train_loop import distributed, step  # noqa: E402

RANK = int(os.environ["RANK"])
real_apply_update, leave = step.apply_update, distributed.stop
distributed.stop = lambda parallel: None


def planted(command: dict):
    """step.apply_update with the command's fault or RNG draw planted in it."""
    die, calls = command.get("die"), [0]

    def apply_update(optimizer, scheduler, scaler):
        calls[0] += 1
        if die and die["rank"] == RANK and calls[0] == die["step"]:
            os._exit(3)
        if calls[0] == command.get("interrupt_in_step"):
            os.kill(os.getpid(), signal.SIGINT)
        if command.get("uneven_rng") and RANK == 1 and scheduler.last_epoch == 0:  # step 1, even after a resume
            torch.rand(5)
        return real_apply_update(optimizer, scheduler, scaler)
    return apply_update


for command in json.loads(Path(sys.argv[1]).read_text()):
    step.apply_update = planted(command)
    code = run.main(command["argv"])
    if code and not (code == 130 and "interrupt_in_step" in command):
        sys.exit(code)
leave(distributed.Parallel(RANK, int(os.environ["WORLD_SIZE"])))
