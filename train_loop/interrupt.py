"""Ctrl-C during training: finish the optimiser step under way, write a checkpoint, and return.

A KeyboardInterrupt raised at an arbitrary point could land inside `optimizer.step()`, with some weights
updated and others not, and the checkpoint written then would hold a state no run ever had. So the first
Ctrl-C only sets a flag that the loop reads between optimiser steps; a second Ctrl-C interrupts at once
(nothing saved beyond the last checkpoint). Python delivers signals to the main thread only: elsewhere
(a notebook's worker thread, say) this does nothing and Ctrl-C behaves as usual.
"""
from __future__ import annotations

import signal
import threading


class StopOnInterrupt:
    """Context manager with a `requested` flag set by the first SIGINT."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
