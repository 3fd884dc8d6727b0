"""Keep freed memory in the process, so that repeated model calls do not fault their pages in again.

glibc's malloc serves every block above its mmap threshold (128 KiB at first, raised up to 32 MiB
on 64-bit Linux) with a memory map of its own and unmaps it when the block is freed. An energy and
forces call on a large structure allocates and frees tensors of hundreds of MB, so the next call
maps them again, and the kernel zeroes every 4 KiB page on first touch. For a periodic water box
of 12,288 atoms (float32, 1 thread), that took 9 of the 13 seconds of a call, while a call on 1,536
atoms spent a third of its time there (scripts/profile_call.py, 2-core AMD EPYC virtual machine).

:func:`retain_freed_memory` sets glibc's malloc to serve all blocks from its heap and never to
return the top of the heap to the kernel. Memory freed by one call is then reused by the next,
and the process keeps its peak resident memory until it ends.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

#: mallopt parameters of glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied = False


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the heap for the rest of the process.

    The setting applies to every allocation of the process, not only to mlpot's. Other C
    libraries (musl, macOS, Windows) are left as they are.

    Returns:
        True when glibc accepted the setting now or before, False on other C libraries.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # M_MMAP_MAX 0: no block gets a memory map of its own. M_TRIM_THRESHOLD -1: glibc stores it
    # as the largest size_t, so the heap is never trimmed.
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
    if _applied:
        logger.debug("glibc malloc keeps freed memory in the heap (M_MMAP_MAX 0, M_TRIM_THRESHOLD -1)")
    return _applied
