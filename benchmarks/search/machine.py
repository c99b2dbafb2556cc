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


def read_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes per second to read ``nbytes`` (default 1 GiB, much larger than the caches): the best of two streaming
    reductions, an fp32 sum and an int16 maximum, each the best of 3 runs. One core reads at a rate that depends on
    the loop (the int16 maximum ran at 13-14 GB/s where the fp32 sum ran at 11.5 on the AMX Xeon), so the faster one
    is the yardstick. Data that fits in the last-level cache reads ~2x faster (20 against 10-14 GB/s on one core for
    8-32 MB), so a search reading a small index is measured against the rate at its own size: the out-of-cache
    rate flatters it (fractions above 1)."""
    values = torch.ones(max(1, nbytes // 4))
    summed = values.numel() * 4 / timed(lambda: values.sum(), statistic=min)
    halves = values.view(torch.int16)
    maximised = halves.numel() * 2 / timed(lambda: halves.amax(), statistic=min)
    return max(summed, maximised)


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
