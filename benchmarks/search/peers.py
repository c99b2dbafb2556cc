"""Peers side by side, one run, the same vectors: what a user could pick instead of metaembed for MaxSim search.

    .venv/bin/python benchmarks/search/peers.py [--documents 10000] [--peers-python /tmp/peers-venv/bin/python]
        [--budget 1,1 2,4 4,8 8,16 16,64]

The vectors: the Debian descriptions encoded by the quickstart's MMR-trained model (64 x 384 per document, 16 x 384
per query; benchmarks/search/real_data.py), searched at the full budget (16,64) or at each ``--budget``: metaembed's
indexes are built once and read the budget's prefix; the peers index only the budget's vectors, once per budget.
Systems:

- plain torch: the best plain code a user could write (benchmarks/search/baseline.py: bf16 blocked matmuls, all
  queries at once, documents in RAM; fp32 matmuls on fp32 documents in RAM on a CPU without native bf16, where bf16
  is emulated; the block size the fastest of several, timed first);
- sentence-transformers 6 ``util.maxsim`` (bf16, or fp32 as plain torch, documents in RAM, then ``topk``);
- metaembed: exact search on its on-disk bf16 index, in bf16 (the default on CPUs with native bf16: scores rounded to
  bf16, so near-ties order by rounding), and on an fp32 index (``dtype="float32"``, scored in fp32); the cascade with its candidate count calibrated on 200 other
  queries (``calibrate_cascade``, recall targets 0.99 and 0.95: two points of its curve); ``dtype="pq"`` (its defaults: 48 code bytes a vector and 5
  int8 directions a document, 1/8 of bf16), alone and with bf16 copies rescoring its best 100;
- Qdrant local mode through ``QdrantMultiVectorIndex`` (exact MaxSim multivectors, qdrant-client);
- PyLate (``rank.rerank``, its Voyager and PLAID indexes) in a separate virtualenv: PyLate pins sentence-transformers
  5 and its PLAID backend (fast-plaid) a CUDA build of torch 2.11, so it cannot share metaembed's environment. Make it
  with ``python3.11 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install pylate "voyager==2.1.*"``
  (~5 GB of CUDA wheels; it runs on the CPU); without it those rows are left out and the table says so.

Per system: build seconds, bytes (on disk, or in RAM for the in-memory ones), one query alone (median of 11 after a
warm-up) and all 100 test queries in one call (fewer for the slowest, said in the row; the median of 3 calls where
a call takes under 2 s), and recall@10 against exact
fp32 MaxSim. Writes benchmarks/results/search_peers.{json,md} ((16,64); search_peers_RxC.* for other budgets), and
with several budgets search_peers_budgets.md: every peer against metaembed's fastest row at equal or better recall.
Ratios are within this run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
import real_data  # noqa: E402
from baseline import BLOCK_CHOICES, resident_documents, tuned_plain_torch  # noqa: E402

import metaembed  # noqa: E402
from metaembed.index import MultiVectorIndex, QdrantMultiVectorIndex  # noqa: E402
from metaembed.index.search import default_compute_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes" / "peers"
RESULTS = ROOT / "results"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rows_of(ids) -> list[int]:
    return [int(str(i).lstrip("d")) for i in ids]


BATCH_CALLS = 3
"""Batch calls timed per row (median) while a call takes under ``BATCH_REPEAT_BELOW_S``; slower rows are timed once."""
BATCH_REPEAT_BELOW_S = 2.0
LONE_QUERIES = 11
"""Lone queries per row (median): at 1-6 ms a row's median of 5 moved by more than the gaps between rows."""


def measure(name: str, search, queries: torch.Tensor, build_s: float, size: int, batch: int | None = None,
            lone: int = LONE_QUERIES, settle: int = 0) -> dict:
    """One row: ``search(queries (n, R_q, D)) -> per-query lists of document row numbers``. ``settle``: searches of
    each shape (one query, the batch) run first, so that metaembed's learned choice between 1 and 2 threads
    (metaembed.index.threadchoice) is settled as in a running service; without it the first batch of a size runs on
    one thread to learn."""
    search(queries[:1])
    for _ in range(settle):
        search(queries[:1])
        search(queries[: batch or len(queries)])
    lone_s = statistics.median(machine.timed(lambda q=q: search(q.unsqueeze(0)), repeat=1) for q in queries[:lone])
    batch_queries = queries[: batch or len(queries)]
    batch_s, found = batch_seconds(search, batch_queries)
    return {"system": name, "build_s": build_s, "bytes": size, "lone_s": lone_s, "batch_s": batch_s,
            "batch_queries": len(batch_queries), "top10": [list(map(int, row[:10])) for row in found]}


def batch_seconds(search, queries) -> tuple[float, list]:
    """The median seconds of up to :data:`BATCH_CALLS` calls of ``search(queries)``, and the first call's results."""
    times, found = [], None
    while len(times) < BATCH_CALLS:
        start = time.perf_counter()
        result = search(queries)
        times.append(time.perf_counter() - start)
        found = result if found is None else found
        if times[-1] >= BATCH_REPEAT_BELOW_S:
            break
    return statistics.median(times), found


SETTLE = 6
"""Searches of each shape before metaembed's rows are timed (see :func:`measure`)."""


def index_search(index, budget: tuple[int, int], **options):
    return lambda q: [rows_of(r.ids) for r in index.search(q, k=10, budget=budget, **options)]


def build_metaembed(documents: torch.Tensor) -> dict:
    """metaembed's indexes, built once for every budget (they hold all 64 vectors; a budget reads a prefix):
    bf16, fp32, and pq with bf16 copies (its codes alone, then + rescoring). Added 2,000 documents at a time, as a user
    adding a corpus in parts would, then compacted into one segment (timed as part of the build)."""
    ids = [f"d{i}" for i in range(len(documents))]
    built = {}
    for dtype, full_precision in (("bfloat16", False), ("float32", False), ("pq", True)):
        path = WORK / f"metaembed-{dtype}{'-full' if full_precision else ''}"
        shutil.rmtree(path, ignore_errors=True)
        start = time.perf_counter()
        with MultiVectorIndex.create(path, documents.shape[-1], documents.shape[1], dtype=dtype,
                                     full_precision=full_precision) as index:
            for begin in range(0, len(documents), 2000):
                index.add(ids[begin:begin + 2000], documents[begin:begin + 2000])
            index.compact()
        built[dtype] = {"index": MultiVectorIndex.open(path), "build_s": time.perf_counter() - start,
                        "bytes": folder_bytes(path),
                        "codes_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "vectors.bin")}
    return built


def pq_holds(index: MultiVectorIndex) -> str:
    """What a pq index stores per document, for a row's name: code bytes a vector and directions a document."""
    settings = index.manifest["pq"]
    basis = settings.get("basis", 0)
    return f"{settings['subquantizers']} B codes a vector" + (f" + {basis} int8 directions a document" if basis else "")


def metaembed_rows(built: dict, queries: torch.Tensor, dev: torch.Tensor, budget: tuple[int, int]) -> list[dict]:
    bf16, pq = built["bfloat16"], built["pq"]
    index = bf16["index"]
    rows = [measure("metaembed exact (bf16 index on disk)", index_search(index, budget), queries, bf16["build_s"],
                    bf16["bytes"], settle=SETTLE),
            measure("metaembed exact (fp32 index on disk)", index_search(built["float32"]["index"], budget), queries,
                    built["float32"]["build_s"], built["float32"]["bytes"], settle=SETTLE)]
    calibrated = set()
    for target in (0.99, 0.95):  # two points of the cascade's recall/latency curve (K >= k = 10 either way)
        candidates = metaembed.calibrate_cascade(index, dev, k=10, target=target, budget=budget).candidates
        if candidates in calibrated:
            continue
        calibrated.add(candidates)
        cascade = lambda q, c=candidates: [  # noqa: E731
            rows_of(r.ids) for r in index.cascade_search(q, k=10, budget=budget, candidates=c)]
        rows.append(measure(f"metaembed cascade ((1,1) first stage, K={candidates} calibrated for recall {target})",
                            cascade, queries, bf16["build_s"], bf16["bytes"], settle=SETTLE))
    held = pq_holds(pq["index"])
    rows.append(measure(f"metaembed pq ({held}; no rescoring)", index_search(pq["index"], budget, rescore=0), queries,
                        pq["build_s"], pq["codes_bytes"], settle=SETTLE))
    rows.append(measure(f"metaembed pq ({held}) + bf16 rescore of 100", index_search(pq["index"], budget, rescore=100),
                        queries, pq["build_s"], pq["bytes"], settle=SETTLE))
    return rows


def in_memory_rows(documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int],
                   sentence_transformers_too: bool = True) -> list[dict]:
    from sentence_transformers.util import maxsim as st_maxsim

    r_q, r_c = budget
    # computed in bf16 where the CPU has it natively, else fp32 (emulated bf16 would be a weak yardstick), and held in
    # RAM in that dtype: what a user would keep for this budget
    compute = default_compute_dtype(torch.bfloat16)
    held = resident_documents(documents, r_c, compute)
    tuned, blocks = tuned_plain_torch(held, queries, budget, k=10, compute_dtype=compute)
    plain = lambda q: tuned(q)[1].tolist()  # noqa: E731
    name = "bf16" if compute == torch.bfloat16 else "fp32"

    def sentence_transformers(q):
        found = []
        for one in q[:, :r_q].to(compute):  # one query at a time: (1, n, r_q, r_c) similarities fit in memory
            found.append(st_maxsim(one.unsqueeze(0), held).float().topk(10, dim=1).indices[0].tolist())
        return found

    size = held.numel() * held.element_size()
    shape = lambda choice: f"{choice[0]:,}{' docs-left' if choice[1] else ''}"  # noqa: E731
    rows = [measure(f"plain torch ({name} blocked matmul, {name} in RAM; block {shape(blocks['lone'])} lone, "
                    f"{shape(blocks['batch'])} batched: the fastest of {2 * len(BLOCK_CHOICES)})", plain, queries,
                    0.0, size)]
    if sentence_transformers_too:
        rows.append(measure(f"sentence-transformers util.maxsim ({name}, RAM)", sentence_transformers, queries, 0.0, size,
                            batch=20))
    return rows


def qdrant_row(documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int]) -> dict:
    from qdrant_client import QdrantClient

    path = WORK / "qdrant"
    shutil.rmtree(path, ignore_errors=True)
    client = QdrantClient(path=str(path))
    start = time.perf_counter()
    index = QdrantMultiVectorIndex.create(client, "peers", documents.shape[-1], documents.shape[1],
                                          document_budgets=[budget[1]])  # one multivector: the budget's prefix
    ids = [f"d{i}" for i in range(len(documents))]
    for begin in range(0, len(documents), 1000):
        index.add(ids[begin:begin + 1000], documents[begin:begin + 1000].float())
    build_s = time.perf_counter() - start
    return measure("Qdrant local mode (exact MaxSim multivectors)", index_search(index, budget), queries, build_s,
                   folder_bytes(path), batch=20)


def pylate_rows(documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int],
                python: str) -> tuple[list[dict], str | None]:
    if not Path(python).is_file():
        return [], f"PyLate not measured: no peers virtualenv at {python} (see this script's docstring)"
    vectors = WORK / "vectors.npz"
    np.savez(vectors, documents=documents[:, : budget[1]].float().numpy(),  # the peers index what the budget reads
             queries=queries[:, : budget[0]].float().numpy())
    out = WORK / "pylate_rows.json"
    done = subprocess.run([python, str(Path(__file__).with_name("peers_pylate.py")), "--vectors", str(vectors),
                           "--work", str(WORK / "pylate"), "--out", str(out)], capture_output=True, text=True)
    if done.returncode:
        return [], f"PyLate failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return json.loads(out.read_text()), None


def recall(found: list[list[int]], truth: torch.Tensor) -> float:
    return statistics.mean(len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist()))


def markdown(results: dict) -> str:
    plain = next(r for r in results["rows"] if r["system"].startswith("plain torch"))
    lines = [
        f"# Peers side by side: MaxSim search at ({results['budget'][0]},{results['budget'][1]}) on the same vectors",
        "",
        f"{results['documents']:,} Debian descriptions encoded by the quickstart's model (64 x 384 per document, "
        f"16 x 384 per query), {results['queries']} test queries; recall@10 against exact fp32 MaxSim. metaembed's "
        "indexes hold all 64 vectors and read the budget's prefix; the others hold only the budget's vectors. "
        f"{results['threads']} threads, {results['machine']}. Lone = median of one query alone (11 queries); per query in a batch = the median of up to 3 calls (one when a call takes 2 s or more) over its queries; "
        "per query in a batch = one call's time over its queries. x plain = the plain torch row's time over this "
        "row's (higher is faster).",
        "",
        "| system | build (s) | MB | lone (ms) | x plain, lone | per query in a batch (ms) | x plain, batch | recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        per_query = row["batch_s"] / row["batch_queries"]
        plain_per_query = plain["batch_s"] / plain["batch_queries"]
        name = row["system"] + ("" if row["batch_queries"] == results["queries"] else f" (batch of {row['batch_queries']})")
        lines.append(f"| {name} | {row['build_s']:.1f} | {row['bytes'] / 1e6:.0f} | {row['lone_s'] * 1e3:.1f} | "
                     f"{plain['lone_s'] / row['lone_s']:.2f} | {per_query * 1e3:.2f} | {plain_per_query / per_query:.2f} | "
                     f"{row['recall_at_10']:.3f} |")
    lines += [""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--peers-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--skip", nargs="*", default=[], choices=["pylate", "qdrant", "st"])
    parser.add_argument("--budget", nargs="+", default=["16,64"],
                        help="r_q,r_c searched, one or more (default the full budget); metaembed's indexes are built "
                             "once for all of them, the peers' once per budget")
    args = parser.parse_args()
    budgets = [tuple(int(x) for x in budget.split(",")) for budget in args.budget]
    torch.set_num_threads(2)
    model, trained = real_data.default_model()
    if not trained:
        raise SystemExit("run `make quickstart` first: the peers search an MMR-trained model's vectors")
    data = real_data.encoded_corpus(model, trained, n_documents=10_000, n_queries=1000)
    documents = data["documents"][: args.documents]
    queries, dev = data["queries"][:100].float(), data["queries"][100:300].float()
    WORK.mkdir(parents=True, exist_ok=True)
    built = build_metaembed(documents)
    summary = []
    for budget in budgets:
        exact = metaembed.maxsim(queries, documents.float(), *budget, dtype=torch.float32)
        truth = exact.topk(10, dim=1).indices
        rows = in_memory_rows(documents, queries, budget, sentence_transformers_too="st" not in args.skip)
        rows += metaembed_rows(built, queries, dev, budget)
        notes = []
        if "qdrant" not in args.skip:
            rows.append(qdrant_row(documents, queries, budget))
        if "pylate" not in args.skip:
            pylate, note = pylate_rows(documents, queries, budget, args.peers_python)
            rows += pylate
            notes += [note] if note else ["PyLate 1.6 (sentence-transformers 5.3, fast-plaid 1.4.6, voyager 2.1, torch "
                                          "2.11) ran in its own virtualenv, 2 threads"]
        for row in rows:
            row["recall_at_10"] = recall(row.pop("top10"), truth[: row["batch_queries"]])
        results = {"budget": list(budget), "documents": len(documents), "queries": len(queries),
                   "threads": torch.get_num_threads(), "machine": "this 2-core CPU", "rows": rows, "notes": notes,
                   "run": time.strftime("%Y-%m-%d %H:%M")}
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "search_peers" + ("" if budget == (16, 64) else f"_{budget[0]}x{budget[1]}")
        (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
        (RESULTS / f"{name}.md").write_text(markdown(results))
        print(markdown(results))
        summary.append(results)
    if len(summary) > 1:
        (RESULTS / "search_peers_budgets.md").write_text(budgets_markdown(summary))
        print(budgets_markdown(summary))


def budgets_markdown(runs: list[dict]) -> str:
    """Every budget on one page: each peer's lone and batched time as a multiple of metaembed's fastest row that
    reaches at least its recall (> 1: metaembed is faster at equal or better recall)."""
    lines = ["# Peers at every budget", "",
             "Per budget, each system's lone-query and per-query batch time (ms) and recall@10 against exact fp32 "
             "MaxSim; then, for every peer, metaembed's fastest row with recall@10 at least the peer's, and the "
             "peer's time over it (> 1: metaembed is faster at equal or better recall). Details per budget in "
             "`search_peers*.md`.", "",
             "| budget | system | lone (ms) | batch (ms/q) | recall@10 | metaembed's fastest at >= this recall, lone / batch | peer time / metaembed's, lone / batch |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        ours = [r for r in run["rows"] if r["system"].startswith("metaembed")]
        budget = f"({run['budget'][0]},{run['budget'][1]})"
        for row in run["rows"]:
            per_query = row["batch_s"] / row["batch_queries"]
            cells = f"| {budget} | {row['system']} | {row['lone_s'] * 1e3:.2f} | {per_query * 1e3:.3f} | {row['recall_at_10']:.3f} |"
            if row in ours:
                lines.append(cells + " | |")
                continue
            able = [r for r in ours if r["recall_at_10"] >= row["recall_at_10"] - 1e-9]
            if not able:
                lines.append(cells + " none reaches its recall | |")
                continue
            lone = min(able, key=lambda r: r["lone_s"])
            batch = min(able, key=lambda r: r["batch_s"] / r["batch_queries"])
            lines.append(cells + f" {lone['system'].split(' (')[0]} {lone['lone_s'] * 1e3:.2f} / "
                         f"{batch['system'].split(' (')[0]} {batch['batch_s'] / batch['batch_queries'] * 1e3:.3f} | "
                         f"{row['lone_s'] / lone['lone_s']:.1f}x / "
                         f"{per_query / (batch['batch_s'] / batch['batch_queries']):.1f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
