"""Keep freed memory for reuse, instead of giving it back to the operating system, when training on CPU.

Every step of eager PyTorch allocates and frees the same large activation tensors (a (8, 6, 300, 300) fp32
attention tensor is 17 MB). glibc's malloc serves blocks above its mmap threshold (128 KiB at start, raised
automatically up to 32 MiB) straight from the kernel with mmap, and returns freed memory at the top of its heap
once more than the trim threshold is free. Memory fresh from the kernel costs a page fault per 4 KiB page on
first touch, while the kernel zero-fills it: on one flan-t5-small training step that is over a hundred thousand
faults, all of them repeated every step.

`keep_freed_memory` changes that with glibc's `mallopt` (man 3 mallopt): no block is served by mmap any more
(M_MMAP_MAX 0; blocks come from malloc's heap whatever their size), and the heap keeps up to 1 GiB of free memory
instead of trimming it, so the next step reuses the pages of the last. Nothing about the numbers changes; the
process's peak memory stays about the same (the same tensors are alive at the peak; measured 4.6-4.7 GB off,
4.7-4.9 GB on), and memory freed at the end of training is kept by the process until it exits.

Measured on flan-t5-small, full fine-tuning, batch 8, one thread, 4 steps, twice each way
(`python bench/profile_train.py --mode full --steps 4 --rows 0 --keep-freed-memory on|off`): 134,000-143,000
minor page faults per step instead of 333,000-343,000, and 526-541 real tokens/s instead of 497-526: a few per
cent, on a machine (a small VM) where a page fault is dear. Linux with glibc only; elsewhere it does nothing.
PyTorch's CUDA caching allocator already keeps freed GPU memory for reuse.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit systems (moot with M_MMAP_MAX 0)
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Heap instead of mmap, and no trimming, for this process. True when glibc accepted every setting."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD),
                (M_MMAP_MAX, 0))
    return all(mallopt(option, value) == 1 for option, value in settings)
