"""The exchange allocator policy: applied once per process, a no-op outside glibc."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from node.exchange import memory

_CHILD = """
from node.exchange.memory import tune_allocator
first = tune_allocator()
second = tune_allocator()
payload = [bytes(4 * 1024 * 1024 - i) for i in range(8)]
assert all(len(p) == 4 * 1024 * 1024 - i for i, p in enumerate(payload))
print(first, second)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_policy_is_accepted_once_and_buffers_stay_intact() -> None:
    # A child process, so this test process keeps its own allocator settings.
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"]


def test_threshold_is_above_the_largest_chunk_buffer() -> None:
    from node.exchange.envelope import MAX_CHUNK_PLAINTEXT

    # A chunk frame in its gRPC message: prefix, ciphertext, tag and framing.
    assert memory.MMAP_THRESHOLD > MAX_CHUNK_PLAINTEXT + 64 * 1024
    assert memory.MMAP_THRESHOLD <= 32 * 1024 * 1024  # glibc refuses larger values


def test_without_a_c_library_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    memory.tune_allocator.cache_clear()
    try:
        assert memory.tune_allocator() is False
    finally:
        memory.tune_allocator.cache_clear()
