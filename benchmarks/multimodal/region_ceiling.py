"""What can several vectors per image buy on the clip-art set, at best? A ceiling on frozen towers, no VLM training.

Every trained multimodal arm is flat across budgets (benchmarks/results/multimodal*.md). On text the cause was found
by bounding what multi-vector scoring can give once trained (benchmarks/mmr_training/late_interaction_ceiling.py);
this is the image analogue. MobileNetV2's 7 x 7 feature grid is read as nested regions, coarse to fine:

    vector 1        the whole grid (its mean)
    vectors 2-5     its four overlapping 4 x 4 quadrants
    vectors 6-14    its nine overlapping 3 x 3 blocks
    vectors 15-63   its 49 cells

so a document budget r_c of 1 / 5 / 14 / 63 vectors reads the image at ever finer levels (a prefix, as MMR needs).
A text is all-MiniLM-L6-v2's mean-pooled sentence vector (frozen). One linear map takes a region's mean feature into
the text space; the score of a text query and an image at budget r is the best cosine over the image's first r
region vectors (MaxSim with one query vector), and of an image query and a text the sum over its first r region
vectors' cosines (MaxSim over one document vector). Arms, each the same map trained differently:

    ridge           the frozen-towers yardstick's ridge map (no contrastive training)
    single          trained (InfoNCE, both directions) on the whole-grid vector only: a CLIP-style single vector
    regions-63      trained on the 63-vector score only
    regions-mmr     trained on every budget's score at once (Matryoshka over the region prefixes: MMR's shape)

If the trained region arms do not beat the trained single vector at their full budget, this data and these towers
hold nothing a budget can buy on images, and a flat MetaEmbed curve is the data's answer, not a training defect.

    .venv/bin/python benchmarks/multimodal/region_ceiling.py [--data DIR]    # ~5 min on 2 cores
Writes benchmarks/results/<--results>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor, AutoModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from frozen_linear import _training_pairs  # noqa: E402

from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.evaluation import evaluate_run  # noqa: E402
from metaembed.evaluation.baselines import load_single_vector_model  # noqa: E402
from metaembed.evaluation.frozen_towers import FROZEN_TOWERS_STRENGTH  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.inputs import load_image  # noqa: E402
from metaembed.model.meta_regions import grid_regions  # noqa: E402
from metaembed.model.pretrained import minilm_path, mobilenet_v2_path  # noqa: E402
from metaembed.ridge import fit_ridge  # noqa: E402

BUDGETS = (1, 5, 14, 63)
"""Region vectors read at each budget: the whole grid, + quadrants, + 3 x 3 blocks, + cells."""
TASKS = ("text-to-image", "image-to-text")
METRICS = ("ndcg@10", "recall@1", "recall@10")


def region_masks(side: int = 7) -> torch.Tensor:
    """(63, side * side) float: each region's share of the grid's cells (rows sum to 1), coarse to fine: the whole
    grid, then the regions of the ``document_regions`` layout (metaembed.model.meta_regions.grid_regions)."""
    masks = torch.zeros(1 + len(grid_regions(side)), side * side)
    for row, region in enumerate([tuple(range(side * side)), *grid_regions(side)]):
        masks[row, list(region)] = 1 / len(region)
    return masks


@torch.no_grad()
def region_features(keys: list, load=load_image, batch_size: int = 32) -> dict:
    """Each image's (63, 1280) region means of MobileNetV2's last feature grid, by key (``load(key)`` gives the
    image: by default a key is a path)."""
    folder = mobilenet_v2_path()
    tower = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    masks = region_masks()
    out: dict = {}
    unique = sorted(set(keys))
    for start in tqdm(range(0, len(unique), batch_size), desc="region features", unit="batch"):
        chunk = unique[start:start + batch_size]
        pixels = processor(images=[load(key) for key in chunk], return_tensors="pt")["pixel_values"]
        grid = tower(pixel_values=pixels.contiguous(memory_format=torch.channels_last)).last_hidden_state
        cells = grid.flatten(2).transpose(1, 2).float()  # (batch, 49, 1280)
        out.update(zip(chunk, masks @ cells))
    return out


class RegionMap(torch.nn.Module):
    """One linear map from a region's mean feature to the text space, started at the ridge fit."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(weight.T.float())
            self.linear.bias.copy_(bias.float())

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(regions), dim=-1)


def text_to_image_scores(texts: torch.Tensor, images: torch.Tensor, budget: int) -> torch.Tensor:
    """(queries, documents): the best cosine of each unit text vector over each image's first ``budget`` regions."""
    return torch.einsum("qd,nrd->qnr", texts, images[:, :budget]).amax(dim=2)


def image_to_text_scores(images: torch.Tensor, texts: torch.Tensor, budget: int) -> torch.Tensor:
    """(queries, documents): the sum of each image query's first ``budget`` regions' cosines to each text."""
    return torch.einsum("qrd,nd->qn", images[:, :budget], texts)


def train_map(arm: str, start: RegionMap, regions: torch.Tensor, texts, *, epochs: int, batch: int,
              lr: float, temperature: float, seed: int) -> tuple[RegionMap, float]:
    """``start`` trained on (image regions, caption vector) pairs with in-batch InfoNCE both ways; returns it and
    the seconds it took. ``arm`` picks the budgets whose scores enter the loss. ``texts``: a tensor (one caption
    vector per image) or a function of the epoch's generator giving one (a caption drawn per epoch)."""
    budgets = {"single": (1,), "regions-63": (63,), "regions-mmr": BUDGETS}[arm]
    model = RegionMap(start.linear.weight.T.detach(), start.linear.bias.detach())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    for _ in range(epochs):
        epoch_texts = texts(generator) if callable(texts) else texts
        order = torch.randperm(len(regions), generator=generator)
        for begin in range(0, len(order) - batch + 1, batch):
            rows = order[begin:begin + batch]
            mapped, captions = model(regions[rows]), epoch_texts[rows]
            labels = torch.arange(len(rows))
            loss = 0.0
            for budget in budgets:
                t2i = text_to_image_scores(captions, mapped, budget) / temperature
                i2t = image_to_text_scores(mapped, captions, budget) / (temperature * budget)
                loss = loss + F.cross_entropy(t2i, labels) + F.cross_entropy(i2t, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), time.perf_counter() - began


def evaluate_map(model: RegionMap, task, name: str, features: dict, text_vectors: dict) -> dict[int, tuple[dict, dict]]:
    """Per budget: (mean metrics, per-query nDCG@10) of ``model`` on one test task."""
    document_ids = list(task.corpus)
    query_ids = list(task.queries)
    with torch.no_grad():
        if name == "text-to-image":
            queries = torch.stack([text_vectors[task.queries[q].text] for q in query_ids])
            documents = model(torch.stack([features[Path(task.corpus[d].image)] for d in document_ids]))
            score = text_to_image_scores
        else:
            queries = model(torch.stack([features[Path(task.queries[q].image)] for q in query_ids]))
            documents = torch.stack([text_vectors[task.corpus[d].text] for d in document_ids])
            score = image_to_text_scores
        results = {}
        for budget in BUDGETS:
            top = score(queries, documents, budget).topk(min(100, len(document_ids)), dim=1).indices.tolist()
            run = {q: [document_ids[j] for j in ranked] for q, ranked in zip(query_ids, top)}
            means, values = evaluate_run(run, task.qrels, metrics=METRICS)
            results[budget] = ({m: round(means[m], 4) for m in METRICS}, {q: v["ndcg@10"] for q, v in values.items()})
    return results


COMPOSITE_SIDE, TILE = 256, 112
"""A composite is a 256 px white canvas with four 112 px tiles in its central 224 px: the tower's resize (shorter
side 256) leaves it as it is and its centre crop keeps exactly the tiles, each 3.5 x 3.5 cells of the 7 x 7 grid."""


def composite(paths: tuple[Path, ...]) -> Image.Image:
    """Four images (each scaled to fit a tile, centred) on one white canvas, in reading order."""
    canvas = Image.new("RGB", (COMPOSITE_SIDE, COMPOSITE_SIDE), "white")
    margin = (COMPOSITE_SIDE - 2 * TILE) // 2
    for k, path in enumerate(paths):
        tile = load_image(path)
        tile.thumbnail((TILE, TILE))
        x = margin + (k % 2) * TILE + (TILE - tile.width) // 2
        y = margin + (k // 2) * TILE + (TILE - tile.height) // 2
        canvas.paste(tile, (x, y))
    return canvas


def in_fours(items: list, seed: int) -> list[tuple]:
    """``items`` shuffled (seeded) and cut into groups of four (a short last group is dropped)."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [items[i] for i in order]
    return [tuple(shuffled[i:i + 4]) for i in range(0, len(shuffled) - 3, 4)]


def composite_control(args, images: list[Path], captions: list[str], task, text_vectors: dict, ridge: "RegionMap",
                      arm_names: tuple[str, ...]) -> tuple[dict, dict]:
    """The control: the same arms trained and tested on composites of four images, where one image does hold
    several things; a query (one image's caption) is relevant to the composite that holds its image. Returns
    (metrics per arm and budget, per-query nDCG@10 per arm and budget) on text -> composite."""
    by_image: dict[Path, list[str]] = {}
    for path, caption in zip(images, captions):
        by_image.setdefault(path, []).append(caption)
    train_groups = in_fours(sorted(by_image), args.seed)
    document_ids = list(task.corpus)
    test_groups = in_fours(document_ids, args.seed)
    keys = [("train", g) for g in train_groups] + [("test", g) for g in test_groups]
    load = (lambda key: composite(key[1]) if key[0] == "train"
            else composite(tuple(Path(task.corpus[d].image) for d in key[1])))
    features = region_features(keys, load)
    train_regions = torch.stack([features[("train", g)] for g in train_groups])

    def captions_drawn(generator: torch.Generator) -> torch.Tensor:
        rows = []
        for group in train_groups:
            member = group[int(torch.randint(len(group), (1,), generator=generator))]
            options = by_image[member]
            rows.append(text_vectors[options[int(torch.randint(len(options), (1,), generator=generator))]])
        return torch.stack(rows)

    holder = {d: f"c-{n}" for n, group in enumerate(test_groups) for d in group}
    qrels = {q: {holder[d]: 1 for d in relevant if d in holder} for q, relevant in task.qrels.items()}
    qrels = {q: r for q, r in qrels.items() if r}
    query_ids = sorted(qrels)
    queries = torch.stack([text_vectors[task.queries[q].text] for q in query_ids])
    composite_ids = [f"c-{n}" for n in range(len(test_groups))]
    test_regions = torch.stack([features[("test", g)] for g in test_groups])
    metrics, per_query = {}, {}
    for arm in arm_names:
        model, seconds = (ridge, 0.0) if arm == "ridge" else train_map(
            arm, ridge, train_regions, captions_drawn, epochs=args.epochs, batch=args.batch, lr=args.lr,
            temperature=args.temperature, seed=args.seed)
        with torch.no_grad():
            documents = model(test_regions)
        metrics[arm], per_query[arm] = {"train_s": round(seconds, 1)}, {}
        for budget in BUDGETS:
            top = text_to_image_scores(queries, documents, budget).topk(min(100, len(composite_ids)), dim=1).indices
            run = {q: [composite_ids[j] for j in ranked] for q, ranked in zip(query_ids, top.tolist())}
            means, values = evaluate_run(run, qrels, metrics=METRICS)
            metrics[arm][str(budget)] = {m: round(means[m], 4) for m in METRICS}
            per_query[arm][budget] = {q: v["ndcg@10"] for q, v in values.items()}
        print(f"composites, {arm}: " + ", ".join(f"{b}: {100 * metrics[arm][str(b)]['ndcg@10']:.1f}" for b in BUDGETS),
              flush=True)
    return metrics, per_query


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/data-3000"))
    parser.add_argument("--results", default="multimodal_region_ceiling")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-composites", action="store_true", help="skip the control on composites of four images")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    began = time.perf_counter()

    images, captions = _training_pairs(args.data / "train.jsonl")
    tasks = {name: load_beir(args.data / "beir" / name) for name in TASKS}
    test_images = [Path(item.image) for task in tasks.values() for side in (task.corpus, task.queries)
                   for item in side.values() if item.image is not None]
    features = region_features([*images, *test_images])
    all_texts = sorted({*captions, *(item.text for task in tasks.values() for side in (task.corpus, task.queries)
                                     for item in side.values() if item.text)})
    text_model = load_single_vector_model(minilm_path())
    encoded = text_model.encode(all_texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=True).float()
    text_vectors = dict(zip(all_texts, encoded))

    train_regions = torch.stack([features[p] for p in images])
    train_texts = torch.stack([text_vectors[c] for c in captions])
    weight, bias = fit_ridge(train_regions[:, 0], train_texts, FROZEN_TOWERS_STRENGTH)
    ridge = RegionMap(weight, bias).eval()
    arms = {"ridge": (ridge, 0.0)}
    for arm in ("single", "regions-63", "regions-mmr"):
        arms[arm] = train_map(arm, ridge, train_regions, train_texts, epochs=args.epochs, batch=args.batch, lr=args.lr,
                              temperature=args.temperature, seed=args.seed)
        print(f"{arm}: trained in {arms[arm][1]:.1f} s", flush=True)

    results: dict = {"settings": vars(args) | {"data": str(args.data), "training_pairs": len(captions),
                                                "ridge_strength": FROZEN_TOWERS_STRENGTH, "budgets": BUDGETS},
                     "tasks": {}, "paired": {}}
    per_query: dict = {}
    for name, task in tasks.items():
        results["tasks"][name] = {}
        for arm, (model, seconds) in arms.items():
            scored = evaluate_map(model, task, name, features, text_vectors)
            results["tasks"][name][arm] = {str(b): means for b, (means, _) in scored.items()} | {"train_s": round(seconds, 1)}
            per_query[(name, arm)] = {b: values for b, (_, values) in scored.items()}
        pairs = {f"{arm} {b} - {arm} 1": (per_query[(name, arm)][b], per_query[(name, arm)][1])
                 for arm in arms for b in (14, 63)}
        pairs |= {f"{arm} 63 - single 1": (per_query[(name, arm)][63], per_query[(name, "single")][1])
                  for arm in ("regions-63", "regions-mmr")}
        pairs["regions-mmr 1 - single 1"] = (per_query[(name, "regions-mmr")][1], per_query[(name, "single")][1])
        pairs["single 1 - ridge 1"] = (per_query[(name, "single")][1], per_query[(name, "ridge")][1])
        results["paired"][name] = {label: paired_bootstrap(a, b) for label, (a, b) in pairs.items()}
    if not args.no_composites:
        name = "composites: text-to-image"
        results["tasks"][name], scored = composite_control(args, images, captions, tasks["text-to-image"], text_vectors,
                                                           ridge, tuple(arms))
        pairs = {f"{arm} {b} - {arm} 1": (scored[arm][b], scored[arm][1]) for arm in arms for b in (5, 14, 63)}
        pairs |= {f"{arm} 63 - single 1": (scored[arm][63], scored["single"][1]) for arm in ("regions-63", "regions-mmr")}
        pairs |= {f"{arm} 5 - single 1": (scored[arm][5], scored["single"][1]) for arm in ("regions-63", "regions-mmr")}
        results["paired"][name] = {label: paired_bootstrap(a, b) for label, (a, b) in pairs.items()}
    results["seconds"] = round(time.perf_counter() - began, 1)

    out = Path(__file__).resolve().parents[1] / "results" / args.results
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    """The results as tables: nDCG@10 / R@1 / R@10 x100 per arm and budget, then the paired comparisons."""
    settings = results["settings"]
    lines = ["# What several vectors per image can buy on the clip-art set: frozen towers, region MaxSim", "",
             f"Data: {settings['data']} ({settings['training_pairs']} training pairs). MobileNetV2 7x7 grid read as "
             "nested regions (1 whole, 4 quadrants, 9 blocks, 49 cells); all-MiniLM-L6-v2 sentence vectors frozen; "
             f"one linear map (ridge start, strength {settings['ridge_strength']}), trained {settings['epochs']} "
             f"epochs, batch {settings['batch']}, lr {settings['lr']}, temperature {settings['temperature']}. "
             f"Made by benchmarks/multimodal/region_ceiling.py in {results['seconds']:.0f} s.", ""]
    for name, arms in results["tasks"].items():
        lines += [f"## {name}: nDCG@10 / R@1 / R@10 (x100) by document (text -> image) or query (image -> text) regions",
                  "", "| arm | " + " | ".join(str(b) for b in settings["budgets"]) + " | train s |",
                  "|---|" + "---|" * (len(settings["budgets"]) + 1)]
        for arm, row in arms.items():
            cells = [" / ".join(f"{100 * row[str(b)][m]:.1f}" for m in METRICS) for b in settings["budgets"]]
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {row['train_s']} |")
        lines += ["", "| comparison (nDCG@10 x100) | difference | 95% interval |", "|---|---|---|"]
        for label, p in results["paired"][name].items():
            lines.append(f"| {label} | {100 * p['difference']:+.2f} | [{100 * p['ci95_low']:+.2f}, "
                         f"{100 * p['ci95_high']:+.2f}] |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
