"""This machine's limits, measured in the benchmark run: read bandwidth and matmul FLOP/s (fp32, bf16)."""

from __future__ import annotations

import time

import torch


def best_time(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_bandwidth(gib: float = 1.0) -> float:
    """Bytes per second to sum a tensor much larger than the caches."""
    tensor = torch.ones(int(gib * (1 << 30)) // 4)
    return tensor.numel() * 4 / best_time(lambda: tensor.sum())


def matmul_flops(dtype: torch.dtype, m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    return 2 * m * k * n / best_time(lambda: a @ b.T)


def measure() -> dict:
    from metaembed.index.search import cpu_has_native_bf16

    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_matmul": cpu_has_native_bf16(),
        "read_bandwidth_bytes_per_s": read_bandwidth(),
        "fp32_matmul_flops": matmul_flops(torch.float32, 1600, 384, 8192),
        "bf16_matmul_flops": matmul_flops(torch.bfloat16, 256, 384, 2048),
    }
