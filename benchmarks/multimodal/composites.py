"""Can a MetaEmbed VLM's budget pay on images that hold several things? MMR training on composites of four images.

On the clip-art set the image budget is flat, and benchmarks/multimodal/region_ceiling.py shows why: even a trained
multi-vector reading of MobileNetV2's grid finds nothing beyond the whole image there (one drawing, one caption),
while on composites of four images (a caption names one of them) region vectors beat one vector by +5 nDCG@10.
This script asks the same of the real model: the composed MobileNetV2 + MiniLM VLM, warm-started and MMR-trained as
`make quickstart-images` trains it, on composites, evaluated at every budget next to the frozen-towers yardstick.

Training rows: each (image alone, caption) pair of the set's train.jsonl becomes a composite of that image and three
other training images (seeded; its tile position drawn too), queried by the caption; the hard negative is another
row's composite. Test: the text -> image task's 1,200 test images cut into 300 composites of four (the grouping of
region_ceiling.py), every test query relevant to the composite holding its image.

    .venv/bin/python benchmarks/multimodal/composites.py [--data DIR] [--steps 100]    # ~25 min on 2 cores
    .venv/bin/python benchmarks/multimodal/composites.py --single-vector ...           # the CLIP-style arm (c)
Writes benchmarks/results/<--results>.{json,md}; benchmarks/multimodal/composites_summary.py compares runs query by
query.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).parent))
from frozen_linear import _training_pairs  # noqa: E402
from region_ceiling import composite, in_fours  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.evaluation import evaluate  # noqa: E402
from metaembed.evaluation.frozen_towers import FROZEN_TOWERS, FrozenTowers  # noqa: E402
from metaembed.evaluation.sweep import SweepSettings  # noqa: E402
from metaembed.model.pretrained import minilm_path, mobilenet_v2_path  # noqa: E402
from metaembed.training import TrainConfig, train  # noqa: E402

TASK = "text-to-composite"


def build(data: Path, out: Path, seed: int) -> tuple[Path, Path]:
    """Write the composite set under ``out`` (train.jsonl, beir/TASK); reused when complete. Returns both paths."""
    train_jsonl, beir = out / "train.jsonl", out / "beir" / TASK
    if (beir / "qrels" / "test.tsv").is_file() and train_jsonl.is_file():
        return train_jsonl, beir
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, captions = _training_pairs(data / "train.jsonl")
    distinct = sorted(set(images))
    rng = random.Random(seed)
    rows = []
    for number, (image, caption) in enumerate(zip(images, captions)):
        others = rng.sample([p for p in distinct if p != image], 3)
        others.insert(rng.randrange(4), image)
        name = f"images/train-{number}.png"
        composite(tuple(others)).save(out / name)
        rows.append({"query": caption, "positive": {"image": name}})
    for number, row in enumerate(rows):  # another row's composite (never its own)
        other = (number + rng.randrange(1, len(rows))) % len(rows)
        row["negatives"] = [rows[other]["positive"]]
    train_jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))

    task = load_beir(data / "beir" / "text-to-image")
    groups = in_fours(list(task.corpus), seed)  # region_ceiling.py's grouping
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    (beir / "images").mkdir(exist_ok=True)
    holder = {}
    with (beir / "corpus.jsonl").open("w") as corpus:
        for number, group in enumerate(groups):
            composite(tuple(Path(task.corpus[d].image) for d in group)).save(beir / "images" / f"c-{number}.png")
            corpus.write(json.dumps({"_id": f"c-{number}", "image": f"images/c-{number}.png"}) + "\n")
            holder.update({d: f"c-{number}" for d in group})
    qrels = {q: sorted({holder[d] for d in relevant if d in holder}) for q, relevant in task.qrels.items()}
    qrels = {q: ids for q, ids in qrels.items() if ids}
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": task.queries[q].text}) + "\n"
                                                for q in sorted(qrels)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{c}\t1\n" for q in sorted(qrels) for c in qrels[q]))
    return train_jsonl, beir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/data-3000"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/composites"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--meta-token-learning-rate", type=float, default=None,
                        help="the meta tokens' and meta_residual map's learning rate (default: the model's, 1e-4)")
    parser.add_argument("--meta-attention", default="full", choices=("full", "document_regions"),
                        help="document_regions: a document's meta tokens read regions of its grid (metaembed.model.meta_regions)")
    parser.add_argument("--single-vector", action="store_true",
                        help="one meta token per side, trained at (1,1) only: the single vector from the same towers")
    parser.add_argument("--results", default="multimodal_composites")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    train_jsonl, beir = build(args.data, args.work / "data", args.seed)
    print(f"composite set: {time.perf_counter() - began:.0f} s", flush=True)

    budgets = ["1,1"] if args.single_vector else [str(Budget(*b)) for b in PAPER_BUDGETS]
    arm = ("c_single_vector_" if args.single_vector else f"a_mmr_{args.meta_attention}_")
    shape = dict(num_query_meta_tokens=1, num_document_meta_tokens=1) if args.single_vector else {}
    config = TrainConfig(
        model=minilm_path(), vision_tower=mobilenet_v2_path(), train_jsonl=[str(train_jsonl)],
        output_dir=str(args.work / f"{arm}meta_lr_{args.meta_token_learning_rate or 1e-4:g}_steps_{args.steps}"),
        meta_attention=args.meta_attention, **shape,
        meta_token_learning_rate=args.meta_token_learning_rate, max_steps=args.steps, batch_size=args.batch_size, num_negatives=1,
        learning_rate=1e-4, projector_learning_rate=1e-3, warmup_ratio=0.1, max_seq_length=96, attention_dropout=0.0,
        image_readout=True, warm_start_strength=None, save_steps=10**6, logging_steps=10, seed=args.seed,
        groups=budgets,
    )
    trained = time.perf_counter()
    result = train(config)
    train_seconds = time.perf_counter() - trained
    from metaembed import MetaEmbed

    model = MetaEmbed.from_pretrained(result.model_path)
    towers = FrozenTowers.of_model(model).fit_pairs_file(train_jsonl)
    results = evaluate(model, beir.parent, budgets, Path(config.output_dir) / "eval", format="beir",
                       settings=SweepSettings(use_cache=False, latency_repeats=0,
                                              metrics=("ndcg@10", "recall@1", "recall@10")),
                       model_name=result.model_path, baselines={FROZEN_TOWERS: towers})
    results["composites"] = {"train_seconds": round(train_seconds, 1), "seconds": round(time.perf_counter() - began, 1),
                             "steps": args.steps, "batch_size": args.batch_size,
                             "meta_token_learning_rate": args.meta_token_learning_rate or 1e-4,
                             "meta_attention": args.meta_attention, "single_vector": args.single_vector,
                             "eval_dir": str(Path(config.output_dir) / "eval"), "data": str(args.data),
                             "training_rows": sum(1 for _ in train_jsonl.open()), "yardstick": towers.describe()}
    out = Path(__file__).resolve().parents[1] / "results" / args.results
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = ["# MMR on composites of four images: does the image budget pay when an image holds several things?", "",
             f"The composed MobileNetV2 + all-MiniLM-L6-v2 VLM, warm-started (readout, held-out strengths) and MMR-trained "
             f"{args.steps} steps of batch {args.batch_size} ("
             f"{'one meta token per side, trained at (1,1) only' if args.single_vector else 'the paper groups'}; "
             f"meta attention {args.meta_attention}; meta tokens and "
             f"residual map at lr "
             f"{args.meta_token_learning_rate or 1e-4:g}) on {results['composites']['training_rows']} composites "
             f"(benchmarks/multimodal/composites.py; {train_seconds:.0f} s of training). Yardstick: "
             f"{towers.describe()}.", "", "| system | nDCG@10 | R@1 | R@10 |", "|---|---|---|---|"]
    for budget in budgets:
        row = results["budgets"][budget]["overall"]
        lines.append(f"| ({budget}) | " + " | ".join(f"{100 * row[m]:.1f}" for m in ("ndcg@10", "recall@1", "recall@10")) + " |")
    row = results["baselines"][FROZEN_TOWERS]["overall"]
    lines.append("| frozen towers | " + " | ".join(f"{100 * row[m]:.1f}" for m in ("ndcg@10", "recall@1", "recall@10")) + " |")
    lines += ["", "| comparison (nDCG@10 x100) | difference | 95% interval |", "|---|---|---|"]
    for label, p in results["paired"]["comparisons"].items():
        lines.append(f"| {label} | {100 * p['difference']:+.2f} | [{100 * p['ci95_low']:+.2f}, {100 * p['ci95_high']:+.2f}] |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
