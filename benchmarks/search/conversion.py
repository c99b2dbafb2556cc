"""Stored bf16 scored in fp32 (a CPU without native bf16): converting a cache-sized block at a time inside the matmul
loop against converting whole ranks (groups of ranks) first, in one process, interleaved.

    .venv/bin/python benchmarks/search/conversion.py    # after benchmarks/search/kernel.py (it makes the index)

The compacted 10,000-document index of kernel.py (64 x 384, bf16), 1 thread, fp32 compute; lone queries (median of
10) and 100-query batches, 5 alternating rounds, medians. "whole ranks" sets the block to one rank of the index
(10,000 x 384 values), the conversion the index did before (each rank converted whole into a fresh tensor, then
multiplied).
Writes benchmarks/results/search_conversion.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import kernel  # noqa: E402
import real_data  # noqa: E402

import metaembed.index.segment as segment_module  # noqa: E402
from metaembed.hardware import cpu_model_name  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402

ROUNDS = 5
SHAPES = (("lone", (16, 64)), ("lone", (4, 8)), ("batch", (4, 8)), ("batch", (1, 1)))


def main() -> None:
    torch.set_num_threads(1)
    model, trained = real_data.default_model()
    queries = real_data.encoded_corpus(model, trained, 10_000, 1000)["queries"][:100].float()
    index = MultiVectorIndex.open(kernel.COMPACTED, threads=1)
    blocked = segment_module._CONVERTED_BLOCK_ELEMENTS
    modes = {"blocks": blocked, "whole": len(index) * index.dim}
    times: dict[str, dict[str, list[float]]] = {f"{kind} {budget}": {m: [] for m in modes} for kind, budget in SHAPES}
    for _ in range(ROUNDS):
        for kind, budget in SHAPES:
            for mode, elements in modes.items():
                segment_module._CONVERTED_BLOCK_ELEMENTS = elements
                search = lambda q, b=budget: index.search(q, k=10, budget=b, compute_dtype=torch.float32)  # noqa: E731
                if kind == "lone":
                    seconds = kernel.lone(search, queries[:10])
                else:
                    seconds = kernel.batch_seconds(search, queries, repeats=1)
                times[f"{kind} {budget}"][mode].append(seconds)
    segment_module._CONVERTED_BLOCK_ELEMENTS = blocked
    rows = [{"shape": shape, **{f"{m}_ms": 1e3 * statistics.median(v) for m, v in by_mode.items()}}
            for shape, by_mode in times.items()]
    results = {"run": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model_name(), "threads": 1, "rounds": ROUNDS,
               "block_elements": blocked, "rows": rows}
    lines = ["# bf16 scored in fp32: converted block by block vs whole", "",
             f"Run {results['run']}, {results['cpu']}, 1 thread, the 10,000 x 64 x 384 compacted index of kernel.py; "
             f"blocks of {blocked:,} values; medians of {ROUNDS} interleaved rounds.", "",
             "| search | whole ranks converted first (ms) | block by block (ms) | blocks / whole |", "|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['whole_ms']:.1f} | {r['blocks_ms']:.1f} | {r['blocks_ms'] / r['whole_ms']:.2f} |"
              for r in rows]
    out = kernel.ROOT / "results"
    (out / "search_conversion.json").write_text(json.dumps(results, indent=1))
    (out / "search_conversion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
