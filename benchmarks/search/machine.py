"""This machine's limits, measured in the benchmark run: read bandwidth and peak matmul FLOP/s (fp32, bf16), each
the best of several shapes."""

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


PEAK_SHAPES = ((256, 384, 2048), (1600, 384, 8192), (1024, 128, 16384), (4096, 384, 4096), (2048, 1024, 2048),
               (4096, 4096, 4096))
"""(m, k, n) shapes whose best matmul rate is the peak: one shape can sit far below what the hardware does."""


def matmul_flops(dtype: torch.dtype, m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    return 2 * m * k * n / timed(lambda: a @ b.T, statistic=min)


def peak_matmul_flops(dtype: torch.dtype) -> tuple[float, dict[str, float]]:
    """The best FLOP/s over :data:`PEAK_SHAPES`, and each shape's rate."""
    rates = {"x".join(map(str, shape)): matmul_flops(dtype, *shape) for shape in PEAK_SHAPES}
    return max(rates.values()), rates


def measure() -> dict:
    from metaembed.hardware import cpu_has_native_bf16

    fp32_peak, fp32_shapes = peak_matmul_flops(torch.float32)
    bf16_peak, bf16_shapes = peak_matmul_flops(torch.bfloat16)
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_matmul": cpu_has_native_bf16(),
        "read_bandwidth_bytes_per_s": read_bandwidth(),
        "fp32_matmul_flops": fp32_peak, "fp32_matmul_flops_by_shape": fp32_shapes,
        "bf16_matmul_flops": bf16_peak, "bf16_matmul_flops_by_shape": bf16_shapes,
    }
