"""This machine's limits, measured in the benchmark run: read bandwidth and matmul FLOP/s (fp32, bf16)."""

from __future__ import annotations

import statistics
import time

import torch


def timed(fn, repeat: int = 3, statistic=statistics.median) -> float:
    """``statistic`` (median by default) of the seconds of ``repeat`` runs after one warm-up (which also fills
    the page cache). The machine limits below take the minimum: the best the hardware did."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistic(times)


def read_bandwidth(gib: float = 1.0) -> float:
    """Bytes per second to sum a tensor much larger than the caches."""
    tensor = torch.ones(int(gib * (1 << 30)) // 4)
    return tensor.numel() * 4 / timed(lambda: tensor.sum(), statistic=min)


def matmul_flops(dtype: torch.dtype, m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    return 2 * m * k * n / timed(lambda: a @ b.T, statistic=min)


def measure() -> dict:
    from metaembed.hardware import cpu_has_native_bf16

    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_matmul": cpu_has_native_bf16(),
        "read_bandwidth_bytes_per_s": read_bandwidth(),
        "fp32_matmul_flops": matmul_flops(torch.float32, 1600, 384, 8192),
        "bf16_matmul_flops": matmul_flops(torch.bfloat16, 256, 384, 2048),
    }
