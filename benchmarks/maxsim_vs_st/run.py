"""``metaembed.maxsim`` against sentence-transformers' ``util.maxsim`` on the same inputs, in the same run.

    .venv/bin/python benchmarks/maxsim_vs_st/run.py                 # ~8 min on 2 busy cores without native bf16
    .venv/bin/python benchmarks/maxsim_vs_st/run.py --documents 10000 --repeats 7

MetaEmbed scores nested prefixes: budget (r_q, r_c) uses the first r_q query vectors and the first r_c document
vectors of an index stored at (16, 64). sentence-transformers' ``maxsim`` takes the sliced views
(``q[:, :r_q]``, ``d[:, :r_c]``). Cases, at the budgets (1,1), (4,8), (16,64), for 1 query (a search) and 64
queries (a batch, as ``metaembed eval`` scores), D = 384 (MiniLM):

- ``bf16``: vectors stored in bf16, computed in bf16 (both functions sum the per-query-vector maxima in fp32);
- ``fp32``: stored and computed in fp32;
- ``bf16->fp32``: stored in bf16, computed in fp32 (``metaembed eval``'s default: a bf16 index, exact fp32
  ranking). ``metaembed.maxsim(..., dtype=torch.float32)`` converts block by block; ST has no compute-dtype
  setting, so its inputs are converted first (timed: it is part of the cost).

Every case checks that both give the same scores, and reports the median of ``--repeats`` timings after a
warm-up, and the ratio ST / ours (above 1: ours is faster). Runs interleave the two functions, so load from other
work falls on both alike. Writes benchmarks/maxsim_vs_st/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from sentence_transformers.util import maxsim as st_maxsim

from metaembed.hardware import cpu_has_native_bf16
from metaembed.scoring import maxsim

HERE = Path(__file__).resolve().parent
BUDGETS = [(1, 1), (4, 8), (16, 64)]
STORED = (16, 64)
CASES = {"bf16": (torch.bfloat16, torch.bfloat16), "fp32": (torch.float32, torch.float32),
         "bf16->fp32": (torch.bfloat16, torch.float32)}
"""Case name -> (storage dtype, compute dtype)."""


def normalized(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(*shape, generator=generator)
    return torch.nn.functional.normalize(vectors, dim=-1)


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    """Median milliseconds of ``repeats`` calls after one warm-up call, and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def run(documents: int, queries_per_batch: tuple[int, ...], repeats: int, dim: int) -> list[dict]:
    rows = []
    base_q = normalized(max(queries_per_batch), STORED[0], dim, seed=0)
    base_d = normalized(documents, STORED[1], dim, seed=1)
    for case, (storage, compute) in CASES.items():
        stored_q, stored_d = base_q.to(storage), base_d.to(storage)
        for n_q in queries_per_batch:
            q = stored_q[:n_q]
            for r_q, r_c in BUDGETS:
                def ours():
                    return maxsim(q, stored_d, r_q, r_c, dtype=compute)

                def theirs():
                    return st_maxsim(q[:, :r_q].to(compute), stored_d[:, :r_c].to(compute))

                ours_ms, ours_scores = timed(ours, repeats)
                st_ms, st_scores = timed(theirs, repeats)
                tolerance = 1e-4 * r_q if compute == torch.float32 else 2e-2 * r_q
                rows.append({
                    "case": case, "queries": n_q, "documents": documents, "budget": f"{r_q},{r_c}",
                    "ours_ms": round(ours_ms, 3), "st_ms": round(st_ms, 3), "st_over_ours": round(st_ms / ours_ms, 3),
                    "max_abs_difference": float((ours_scores - st_scores).abs().max()),
                    "same_scores": bool(torch.allclose(ours_scores, st_scores, atol=tolerance, rtol=0)),
                })
                print(f"{case:>10} q={n_q:<3} ({r_q},{r_c}): ours {ours_ms:8.2f} ms  st {st_ms:8.2f} ms  "
                      f"st/ours {st_ms / ours_ms:5.2f}", flush=True)
    return rows


def machine() -> str:
    """CPU count, model and whether it multiplies bf16 natively (without, bf16 matmuls are emulated and slow)."""
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({model}), native bf16: {'yes' if cpu_has_native_bf16() else 'no'}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# metaembed.maxsim vs sentence_transformers.util.maxsim ({meta['documents']} documents, D={meta['dim']},"
             f" index stored at (16,64); median of {meta['repeats']} runs, ms)", "",
             f"{meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; load {meta['load_start']} -> "
             f"{meta['load_end']}.", "",
             "| case | queries | budget | ours ms | ST ms | ST / ours | same scores |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['queries']} | ({r['budget']}) | {r['ours_ms']:.2f} | {r['st_ms']:.2f} | "
              f"{r['st_over_ours']:.2f} | {'yes' if r['same_scores'] else 'NO'} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows = run(args.documents, tuple(args.queries), args.repeats, args.dim)
    meta = {"documents": args.documents, "dim": args.dim, "repeats": args.repeats, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": machine(),
            "load_start": load_start, "load_end": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
