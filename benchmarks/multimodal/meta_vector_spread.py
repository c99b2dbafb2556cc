"""How far a trained model's meta vectors stray from its first (mean) vector: if every vector 2..R is a near copy of
vector 1, no budget can buy anything, whatever the data.

For each model: the spectral norm of the meta_residual map (vectors 2..R = mean + W h_i, W started at zero), and on
a sample of test images (documents) and captions (queries) the cosine of every vector 2..R with vector 1.

    .venv/bin/python benchmarks/multimodal/meta_vector_spread.py --model NAME=PATH [--model ...] [--data DIR]
Writes benchmarks/results/<--results>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from metaembed import MetaEmbed  # noqa: E402
from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.inputs import load_image  # noqa: E402


def cosines_to_first(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Every item's vectors 2..R: their cosine with its vector 1, flattened."""
    stacked = F.normalize(torch.stack([v.float() for v in vectors]), dim=-1)
    return (stacked[:, 1:] * stacked[:, :1]).sum(-1).flatten()


def spread(model_path: str, task, count: int) -> dict:
    model = MetaEmbed.from_pretrained(model_path)
    weights = Path(model_path) / "1_MetaTokenPooling" / "model.safetensors"
    residual = load_file(weights).get("meta_residual.weight") if weights.is_file() else None
    documents = [load_image(task.corpus[d].image) for d in list(task.corpus)[:count]]
    queries = [task.queries[q].text for q in list(task.queries)[:count]]
    row = {"residual_spectral_norm": None if residual is None else round(float(torch.linalg.matrix_norm(residual.float(), 2)), 4)}
    for side, cosines in (("documents", cosines_to_first(model.encode_document(documents))),
                          ("queries", cosines_to_first(model.encode_query(queries)))):
        row[side] = {"mean_cosine": round(float(cosines.mean()), 4), "min_cosine": round(float(cosines.min()), 4)}
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a saved MetaEmbed model")
    parser.add_argument("--data", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/data-3000"))
    parser.add_argument("--task", default="text-to-image")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--results", default="multimodal_meta_vector_spread")
    args = parser.parse_args(argv)
    task = load_beir(args.data / "beir" / args.task)
    rows = {}
    for entry in args.model:
        name, path = entry.split("=", 1)
        rows[name] = spread(path, task, args.count) | {"path": path}
        print(name, rows[name], flush=True)
    out = Path(__file__).resolve().parents[1] / "results" / args.results
    out.with_suffix(".json").write_text(json.dumps({"data": str(args.data), "task": args.task, "count": args.count,
                                                    "models": rows}, indent=2) + "\n")
    lines = [f"# Meta vectors against vector 1 ({args.count} test images and captions of {args.data.name}/{args.task})", "",
             "| model | residual map, spectral norm | documents: mean / min cosine | queries: mean / min cosine |",
             "|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['residual_spectral_norm']} | {row['documents']['mean_cosine']:.4f} / "
                     f"{row['documents']['min_cosine']:.4f} | {row['queries']['mean_cosine']:.4f} / "
                     f"{row['queries']['min_cosine']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
