"""What the machine computes fast: the one place that decides when bf16 pays off (search and training), and how
many threads torch runs on."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none."""
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it bf16 matmul is emulated and slow."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_model_name() -> str:
    """The CPU's model name as the kernel reports it (e.g. for benchmark reports), or "CPU"."""
    lines = _cpuinfo().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bf16 mixed precision speeds ``device`` up: a CUDA GPU with bf16, or a CPU with native bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


@contextmanager
def torch_threads(threads: int | None, exactly: bool = False) -> Iterator[None]:
    """Run torch on at most ``threads`` threads in the calling thread for the block (None: leave it as it is;
    ``exactly``: on that many, raising the count too).

    Also for small operations: waking a thread pool costs more than they do, and on a busy machine a parallel
    region waits for its slowest, possibly descheduled, thread."""
    before = torch.get_num_threads()
    if threads is None or threads == before or (threads > before and not exactly):
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
