"""Allocator policy for streaming shares: recycle chunk-sized buffers instead of mapping them.

Every chunk of a share passes through several short-lived buffers of up to
4 MiB (gRPC message slices, the received bytes, the AES-GCM output, the IPC
message). glibc serves blocks above its mmap threshold with a fresh ``mmap``
and returns them with ``munmap``, so each of those buffers costs one page
fault per 4 KiB page on first touch; its dynamic threshold only partly avoids
that, and only after a block was freed in the same arena. Measured on the
exchange benchmark, the faults cost more CPU than the AES-GCM pass itself.

:func:`tune_allocator` raises the mmap threshold above the chunk size and
caps the number of malloc arenas, so freed chunk buffers are reused from the
heap, and a few arenas (not one per thread) hold them. Peak memory is still
the buffers in flight, which the exchange windows bound; the heap keeps up to
:data:`TRIM_THRESHOLD` of free memory for the next share instead of returning
it at once.

Invariant: the policy only changes where glibc finds memory, never what a
buffer holds; on any other C library, or if ``mallopt`` is missing, it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Above the largest chunk buffer (4 MiB plus framing); glibc's maximum is 32 MiB.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free heap kept for reuse (a few chunk windows) before glibc returns it to the system.
TRIM_THRESHOLD = 32 * 1024 * 1024
#: Few arenas, so buffers freed by one thread are reused by the others.
ARENA_MAX = 2


@functools.cache
def tune_allocator() -> bool:
    """Apply the policy once per process; returns whether glibc accepted it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        mallopt(_M_ARENA_MAX, ARENA_MAX),
    ]
    return all(r == 1 for r in results)
