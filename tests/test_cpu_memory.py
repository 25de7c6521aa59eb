"""train_loop/cpu_speed.py: after keep_freed_memory, a large block comes from malloc's heap (reusable pages),
not from a fresh mmap the kernel must fault in page by page."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util
    import torch
    from train_loop.cpu_speed import keep_freed_memory

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2

    def mmapped_growth(size):  # bytes of new mmapped blocks while a tensor of `size` bytes is alive
        before = libc.mallinfo2().hblkhd
        block = torch.empty(size, dtype=torch.uint8)
        grown = libc.mallinfo2().hblkhd - before
        del block
        return grown

    default = mmapped_growth(20 * 2**20)  # glibc then raises its own threshold to 20 MiB, no further
    accepted = keep_freed_memory()
    ours = mmapped_growth(40 * 2**20)     # above glibc's raised 20 MiB threshold
    print(default, accepted, ours)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_large_blocks_come_from_the_heap_after_keep_freed_memory():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, check=True)
    default, accepted, ours = out.stdout.split()
    assert int(default) >= 20 * 2**20, "without the setting, glibc mmaps a fresh 20 MiB block"
    assert accepted == "True"
    assert int(ours) == 0, "with it, a 40 MiB block comes from the heap"
