"""MMR training of a real small vision-language model: MobileNetV2 (ImageNet) -> projector -> a language model
(all-MiniLM-L6-v2, or SmolLM2-135M), on Debian's clip art and icons with their captions.

    .venv/bin/python benchmarks/multimodal/run.py                                  # MiniLM, arms a b c d
    .venv/bin/python benchmarks/multimodal/run.py --language-models smollm2 --arms a_mmr c_single_vector
    .venv/bin/python benchmarks/multimodal/run.py --quick                          # a few-minute end-to-end check

Arms, each trained the same steps on the same pairs (vision tower frozen, language model and projector in
full, meta tokens in full): (a) MMR with the paper's groups, (b) only the largest group (16,64), (c) a single
vector per item from the same towers (one meta token per side: the CLIP-style baseline), (d) untrained (the
composed model as built: pretrained towers, new projector and meta tokens), (e) the language model alone as an
ordinary single-vector model on the items' text (text -> image+text only: the baseline without images), (f) both
towers frozen and a ridge map fitted on the training pairs from pooled image features to the text embedding (the
simplest retriever a user could build from the same towers: training the vision-language model pays only above it;
benchmarks/multimodal/frozen_linear.py), (g) arm (a) with LoRA on the language model, (h) the composed model with
only the projector warm start (metaembed.training.projector_warm_start, which every trained arm starts from unless
--no-warm-start; with --image-readout it also fits the image readout, a linear skip from each grid cell to the
language model's output), (i) arm (a) without that warm start, (j) arm (a) with ``meta_attention="document_regions"``
(a document image's meta token v >= 2 reads one region of the grid: metaembed.model.meta_regions). Every arm is evaluated with
``metaembed eval``'s own sweep on the set's three tasks (text -> image, image -> text, text -> image+text),
at every budget; paired bootstrap intervals over the queries compare budgets and arms.
Writes benchmarks/results/multimodal.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from metaembed import MetaEmbed  # noqa: E402
from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.data.image_sets import build_image_text_sets  # noqa: E402
from metaembed.evaluation import evaluate  # noqa: E402
from metaembed.evaluation.runs import PER_QUERY_FILE  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.evaluation.sweep import SweepSettings  # noqa: E402
from metaembed.model import pretrained  # noqa: E402
from metaembed.training import TrainConfig  # noqa: E402
from metaembed.training.data import read_jsonl  # noqa: E402
from metaembed.training.projector_warm_start import warm_start_projector  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arms import machine, train_or_reuse  # noqa: E402
from multimodal.frozen_linear import evaluate_frozen_linear  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
METRICS = ("ndcg@10", "recall@1", "recall@10")
BUDGETS = [str(Budget(*b)) for b in PAPER_BUDGETS]
PAPER_GROUPS = [str(Budget(*b)) for b in PAPER_BUDGETS]
ARMS = {
    "a_mmr": dict(groups=PAPER_GROUPS, num_query_meta_tokens=16, num_document_meta_tokens=64),
    "b_largest_group_only": dict(groups=["16,64"], num_query_meta_tokens=16, num_document_meta_tokens=64),
    "c_single_vector": dict(groups=["1,1"], num_query_meta_tokens=1, num_document_meta_tokens=1),
    "d_untrained": dict(num_query_meta_tokens=16, num_document_meta_tokens=64),
    "h_warm_start_only": {},
    "i_mmr_no_warm_start": dict(groups=PAPER_GROUPS, num_query_meta_tokens=16, num_document_meta_tokens=64,
                                projector_warm_start=False),
    "e_text_only": {},
    "f_frozen_linear": {},
    "g_mmr_lora": dict(groups=PAPER_GROUPS, num_query_meta_tokens=16, num_document_meta_tokens=64, lora=True),
    "j_mmr_document_regions": dict(groups=PAPER_GROUPS, num_query_meta_tokens=16, num_document_meta_tokens=64,
                                   meta_attention="document_regions"),
}
ARM_LABELS = {"a_mmr": "(a) MMR, paper groups", "b_largest_group_only": "(b) only (16,64)",
              "c_single_vector": "(c) single vector (CLIP-style)", "d_untrained": "(d) untrained",
              "e_text_only": "(e) the language model alone on the text (mean pooling, cosine; images unseen)",
              "f_frozen_linear": "(f) frozen towers + a ridge map (pooled image features -> the text embedding)",
              "g_mmr_lora": "(g) MMR, paper groups, LoRA on the language model",
              "h_warm_start_only": "(h) untrained but for the projector warm start (closed-form ridge)",
              "i_mmr_no_warm_start": "(i) MMR, paper groups, without the projector warm start",
              "j_mmr_document_regions": "(j) MMR, paper groups, a document image's meta tokens read regions of its grid"}
TEXT_ONLY_TASKS = ("text-to-image-text",)
"""Tasks whose items all hold text, where the plain language model (arm e) can answer at all."""
LANGUAGE_MODELS = {"minilm": ("all-MiniLM-L6-v2", pretrained.minilm_path),
                   "smollm2": ("SmolLM2-135M-Instruct", pretrained.smollm2_135m_path)}


def variant(args: argparse.Namespace) -> str:
    """The suffix of an arm's folders for settings that change the model (none: the folders of earlier runs)."""
    weight = f"_image_weight_{args.mixed_image_weight:g}" if args.mixed_image_weight is not None else ""
    strength = "" if args.warm_start_strength == 0.15 else (
        "_strength_held_out" if args.warm_start_strength is None else f"_strength_{args.warm_start_strength:g}")
    return weight + strength + ("_readout" if args.image_readout else "")


def arm_model(arm: str, language: str, data, work: Path, args: argparse.Namespace) -> tuple[str, float | None]:
    """(model folder, training seconds or None) of one arm over one language model."""
    language_path = args.language_model_path or LANGUAGE_MODELS[language][1]()
    vision = pretrained.mobilenet_v2_path()
    folder = work / "runs" / language / (arm + variant(args))
    if arm in ("d_untrained", "h_warm_start_only"):
        model_path = folder / "model"
        if not (model_path / "config.json").is_file():
            model = MetaEmbed.from_backbone(language_path, 16, 64, vision_tower=vision, max_seq_length=args.max_length,
                                            first_vector="auto", meta_residual=None,  # training's layout
                                            mixed_image_weight=args.mixed_image_weight)
            if arm == "h_warm_start_only":
                report = warm_start_projector(model, read_jsonl(data.train_jsonl)[0], image_readout=args.image_readout,
                                              strength=args.warm_start_strength)
                print(report.summary(), report.held_out_r2 or "", flush=True)
            model.save_pretrained(str(model_path))
        return str(model_path), None
    config = TrainConfig(
        model=language_path, vision_tower=vision, train_jsonl=[str(data.train_jsonl)], output_dir=str(folder),
        max_steps=args.steps, batch_size=args.batch_size, num_negatives=1, learning_rate=args.learning_rate,
        warmup_ratio=0.1, max_seq_length=args.max_length, attention_dropout=0.0, seed=0, save_steps=10**6,
        projector_learning_rate=args.projector_learning_rate,
        logging_steps=10, batches_by_task=not args.mixed_batches, dataloader_num_workers=args.dataloader_workers,
        **{"lora": args.lora, "projector_warm_start": not args.no_warm_start, "image_readout": args.image_readout,
           "mixed_image_weight": args.mixed_image_weight, "warm_start_strength": args.warm_start_strength,
           **ARMS[arm]},
    )
    path, _, seconds = train_or_reuse(config, args.reuse_trained)
    return path, seconds


def evaluate_arm(model_path: str, arm: str, data, out: Path, args: argparse.Namespace) -> dict:
    """``metaembed eval``'s sweep of one arm on every task; returns its results and per-query nDCG@10."""
    budgets = ["1,1"] if arm == "c_single_vector" else BUDGETS
    settings = SweepSettings(batch_size=args.eval_batch_size, latency_queries=4, latency_repeats=1, use_cache=False)
    results = evaluate(model_path, data.beir, budgets, out, settings=settings)
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for line in (out / PER_QUERY_FILE).read_text().splitlines():
        row = json.loads(line)
        per_query.setdefault(row["task"], {}).setdefault(row["system"], {})[row["query_id"]] = row["ndcg@10"]
    tasks = {budget: entry["tasks"] for budget, entry in results["budgets"].items()}
    return {"tasks": {task: {budget: {m: round(tasks[budget][task][m], 4) for m in METRICS} for budget in tasks}
                      for task in next(iter(tasks.values()))},
            "per_query_ndcg": per_query}


def evaluate_text_only(language_path: str, data, args: argparse.Namespace) -> dict:
    """Arm (e): the plain language model as an ordinary single-vector model (mean pooling, cosine) on the text of
    each item, images ignored: the baseline a user has without any image model, on the tasks where it applies."""
    import torch
    from sentence_transformers import SentenceTransformer

    from metaembed.data.beir import load_beir
    from metaembed.evaluation.metrics import evaluate_run

    model = SentenceTransformer(language_path)
    tasks: dict[str, dict] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for name in TEXT_ONLY_TASKS:
        task = load_beir(Path(data.beir) / name)
        document_ids, query_ids = list(task.corpus), list(task.queries)
        documents = model.encode([task.corpus[i].text for i in document_ids], batch_size=args.eval_batch_size,
                                 convert_to_tensor=True, normalize_embeddings=True)
        queries = model.encode([task.queries[i].text for i in query_ids], batch_size=args.eval_batch_size,
                               convert_to_tensor=True, normalize_embeddings=True)
        top = torch.topk(queries @ documents.T, k=min(100, len(document_ids)), dim=1).indices.tolist()
        run = {query_id: [document_ids[j] for j in ranked] for query_id, ranked in zip(query_ids, top)}
        means, values = evaluate_run(run, task.qrels, metrics=METRICS)
        tasks[name] = {"1,1": {m: round(means[m], 4) for m in METRICS}}
        per_query[name] = {"1,1": {query_id: metrics["ndcg@10"] for query_id, metrics in values.items()}}
    return {"tasks": tasks, "per_query_ndcg": per_query}


def comparisons(arms: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per task: paired nDCG@10 differences (first - second) with 95% bootstrap intervals."""
    pairs = []
    for arm in ("a_mmr", "b_largest_group_only", "g_mmr_lora", "i_mmr_no_warm_start", "j_mmr_document_regions",
                "d_untrained", "h_warm_start_only"):
        if arm in arms:
            short = arm[0]
            pairs.append((f"{short} (16,64) - {short} (1,1)", (arm, "16,64"), (arm, "1,1")))
    if {"a_mmr", "b_largest_group_only"} <= set(arms):
        pairs += [("a (1,1) - b (1,1)", ("a_mmr", "1,1"), ("b_largest_group_only", "1,1")),
                  ("a (16,64) - b (16,64)", ("a_mmr", "16,64"), ("b_largest_group_only", "16,64"))]
    if "e_text_only" in arms:
        pairs += [(f"a ({b}) - e", ("a_mmr", b), ("e_text_only", "1,1")) for b in ("1,1", "16,64") if "a_mmr" in arms]
        pairs += [("c (1,1) - e", ("c_single_vector", "1,1"), ("e_text_only", "1,1"))] if "c_single_vector" in arms else []
    if "f_frozen_linear" in arms:
        pairs += [(f"{arm[0]} ({b}) - f", (arm, b), ("f_frozen_linear", "1,1"))
                  for arm, budgets in (("a_mmr", ("1,1", "16,64")), ("c_single_vector", ("1,1",)), ("g_mmr_lora", ("1,1", "16,64")),
                                       ("j_mmr_document_regions", ("1,1", "16,64")))
                  if arm in arms for b in budgets]
    if {"a_mmr", "i_mmr_no_warm_start"} <= set(arms):
        pairs += [(f"a ({b}) - i ({b})", ("a_mmr", b), ("i_mmr_no_warm_start", b)) for b in ("1,1", "16,64")]
    for arm in ("a_mmr", "c_single_vector"):
        if {arm, "h_warm_start_only"} <= set(arms):  # what the training steps add to the warm start alone
            pairs += [(f"{arm[0]} (1,1) - h (1,1)", (arm, "1,1"), ("h_warm_start_only", "1,1"))]
    if {"a_mmr", "j_mmr_document_regions"} <= set(arms):
        pairs += [(f"j ({b}) - a ({b})", ("j_mmr_document_regions", b), ("a_mmr", b)) for b in ("1,1", "16,64")]
    if {"a_mmr", "g_mmr_lora"} <= set(arms):
        pairs += [(f"g ({b}) - a ({b})", ("g_mmr_lora", b), ("a_mmr", b)) for b in ("1,1", "16,64")]
    if "c_single_vector" in arms:
        for arm in ("a_mmr", "b_largest_group_only"):
            if arm in arms:
                pairs += [(f"{arm[0]} ({b}) - c (1,1)", (arm, b), ("c_single_vector", "1,1")) for b in ("1,1", "16,64")]
    out: dict[str, dict[str, dict]] = {}
    tasks = max((arm["per_query_ndcg"].keys() for arm in arms.values()), key=len)
    for task in tasks:
        out[task] = {name: paired_bootstrap(arms[first[0]]["per_query_ndcg"][task][first[1]],
                                            arms[second[0]]["per_query_ndcg"][task][second[1]])
                     for name, first, second in pairs
                     if task in arms[first[0]]["per_query_ndcg"] and task in arms[second[0]]["per_query_ndcg"]}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages = list(results["language_models"])
    tasks = list(results["tasks"])
    figure, axes = plt.subplots(len(languages), len(tasks), figsize=(4.2 * len(tasks), 3.6 * len(languages)), squeeze=False)
    for row, language in enumerate(languages):
        arms = results["language_models"][language]["arms"]
        for column, task in enumerate(tasks):
            axis = axes[row][column]
            for arm, style in (("a_mmr", "o-"), ("b_largest_group_only", "s-"), ("g_mmr_lora", "^-"),
                               ("i_mmr_no_warm_start", "v-"), ("j_mmr_document_regions", "D-"), ("d_untrained", "x:"),
                               ("h_warm_start_only", "+:")):
                if arm in arms:
                    axis.plot(range(len(BUDGETS)), [arms[arm]["tasks"][task][b]["ndcg@10"] for b in BUDGETS], style,
                              label=ARM_LABELS[arm])
            for arm, colour in (("c_single_vector", "tab:green"), ("e_text_only", "tab:gray"), ("f_frozen_linear", "tab:red")):
                if arm in arms and task in arms[arm]["tasks"]:
                    axis.axhline(arms[arm]["tasks"][task]["1,1"]["ndcg@10"], color=colour, linestyle="--",
                                 label=ARM_LABELS[arm].split(" (")[0] if arm != "c_single_vector" else ARM_LABELS[arm])
            axis.set_xticks(range(len(BUDGETS)), [f"({b})" for b in BUDGETS], fontsize=7)
            axis.set_title(f"{LANGUAGE_MODELS[language][0]}: {task}", fontsize=9)
            axis.set_ylabel("nDCG@10")
            axis.grid(alpha=0.3)
    legend: dict[str, object] = {}  # every arm once, whichever panel drew it (arm (e) only has the text task)
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=7)
    figure.suptitle(f"MobileNetV2 + language model, MMR on clip art and icons ({results['settings']['steps']} steps)")
    figure.tight_layout(rect=(0, 0.04 + 0.035 * ((len(legend) + 2) // 3), 1, 1))
    figure.savefig(path, dpi=110)


def markdown(results: dict) -> str:
    settings, data = results["settings"], results["data"]
    lines = ["# Multimodal MMR: MobileNetV2 + a language model", "",
             f"Data: {data['description']}. Test queries per task: {data['test_queries']}.", "",
             *([f"Note: {results['note']}", ""] if results.get("note") else []),
             f"Settings: {settings['steps']} steps, batch {settings['batch_size']} + 1 hard negative, lr "
             f"{settings['learning_rate']} (projector: {settings.get('projector_learning_rate') or 'the same'}), {settings['max_length']} own tokens per item, "
             f"{'batches mixing the tasks' if settings.get('mixed_batches') else 'each batch from one task'}, "
             f"projector {'as composed (no warm start)' if settings.get('no_warm_start', True) else 'warm-started (closed-form ridge)'}, "
             f"{'an image readout fitted with it' if settings.get('image_readout') and not settings.get('no_warm_start', True) else 'no image readout'}, vision tower frozen, "
             f"{'LoRA' if settings['lora'] else 'language model and projector in full'}; machine: {results['machine']}.", ""]
    for language, entry in results["language_models"].items():
        lines += [f"## {LANGUAGE_MODELS[language][0]}", ""]
        for task in results["tasks"]:
            lines += [f"### {task}: nDCG@10 / Recall@1 / Recall@10 (x100)", "",
                      "| arm | " + " | ".join(f"({b})" for b in BUDGETS) + " | train s |", "|---|" + "---|" * (len(BUDGETS) + 1)]
            for arm, values in entry["arms"].items():
                if task not in values["tasks"]:
                    continue
                cells = []
                for budget in BUDGETS:
                    m = values["tasks"][task].get(budget)
                    cells.append(f"{100 * m['ndcg@10']:.1f} / {100 * m['recall@1']:.1f} / {100 * m['recall@10']:.1f}" if m else "")
                lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + f" | {values.get('train_seconds') or ''} |")
            lines += ["", "| comparison (nDCG@10 x100) | difference | 95% interval |", "|---|---|---|"]
            for name, value in entry["comparisons"].get(task, {}).items():
                lines.append(f"| {name} | {100 * value['difference']:+.2f} | "
                             f"[{100 * value['ci95_low']:+.2f}, {100 * value['ci95_high']:+.2f}] |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_results(results: dict, path: Path) -> None:
    """JSON, the Markdown tables and the plot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    plot(results, path.with_suffix(".png"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language-models", nargs="+", default=["minilm"], choices=sorted(LANGUAGE_MODELS))
    parser.add_argument("--arms", nargs="+",
                        default=["e_text_only", "f_frozen_linear", "d_untrained", "h_warm_start_only", "a_mmr",
                                 "c_single_vector", "b_largest_group_only"],
                        choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--projector-learning-rate", type=float, default=None,
                        help="the new projector's learning rate (default: --learning-rate)")
    parser.add_argument("--max-length", type=int, default=96, help="an item's own tokens (image cells + text)")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--note", default="", help="a line on how this run was made, kept in the results")
    parser.add_argument("--dataloader-workers", type=int, default=0, help="processes that open and resize images")
    parser.add_argument("--train-only", action="store_true",
                        help="train the arms and stop (a later --reuse-trained run evaluates them); arms run in parallel "
                             "processes this way")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="train from the composed projector as built (default: the closed-form projector warm start, "
                             "metaembed.training.projector_warm_start)")
    parser.add_argument("--image-readout", action="store_true",
                        help="the warm start also fits the image readout, a linear skip from each grid cell to the "
                             "language model's output (metaembed.training.projector_warm_start); off by default")
    parser.add_argument("--warm-start-strength", type=lambda v: None if v == "held-out" else float(v), default=0.15,
                        help="the warm start's relative ridge strength, or 'held-out' (chosen by cross-validation)")
    parser.add_argument("--mixed-image-weight", type=float, default=None,
                        help="the share of an image+text item's mean first vector held by its image cells")
    parser.add_argument("--mixed-batches", action="store_true",
                        help="batches mix the three tasks (default: each batch from one task, batches_by_task)")
    parser.add_argument("--language-model-path", default=None,
                        help="a folder or hub id for the (one) language model, instead of the offline default")
    parser.add_argument("--max-images", type=int, default=3000)
    parser.add_argument("--test-queries", type=int, default=500)
    parser.add_argument("--dev-queries", type=int, default=200)
    parser.add_argument("--corpus-size", type=int, default=1200)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark"))
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "multimodal.json")
    parser.add_argument("--reuse-trained", action="store_true", help="reuse arms an earlier run trained with the same settings")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline, not the method")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.max_images, args.test_queries, args.dev_queries, args.corpus_size = 4, 300, 40, 20, 120
        args.work = args.work.with_name(args.work.name + "-quick")
        args.results = args.results.with_name("multimodal_quick.json")

    data = build_image_text_sets(args.work / f"data-{args.max_images}", seed=0, max_images=args.max_images,
                                 num_test=args.test_queries, num_dev=args.dev_queries, corpus_size=args.corpus_size)
    stats = json.loads(data.stats.read_text())
    results: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(),
        **({"note": args.note} if args.note else {}),
        "data": {"description": "Debian openclipart-svg drawings (SVG title/description/keywords) and application icons "
                                "(papirus/breeze) with their package descriptions; split by family, deduplicated by pixels "
                                "and captions (metaembed.data.image_sets)",
                 "test_queries": args.test_queries, "stats": stats},
        "tasks": [], "language_models": {},
    }
    for language in args.language_models:
        arms: dict[str, dict] = {}
        for arm in args.arms:
            print(f"== {language} / {arm}", flush=True)
            if args.train_only:
                if arm not in ("d_untrained", "e_text_only", "f_frozen_linear", "h_warm_start_only"):
                    arm_model(arm, language, data, args.work, args)
                continue
            start = time.perf_counter()
            if arm == "e_text_only":
                seconds = None
                arms[arm] = evaluate_text_only(args.language_model_path or LANGUAGE_MODELS[language][1](), data, args)
            elif arm == "f_frozen_linear":
                seconds = None
                arms[arm] = evaluate_frozen_linear(args.language_model_path or LANGUAGE_MODELS[language][1](),
                                                   pretrained.mobilenet_v2_path(), data, METRICS, args.eval_batch_size)
            else:
                path, seconds = arm_model(arm, language, data, args.work, args)
                start = time.perf_counter()
                arms[arm] = evaluate_arm(path, arm, data, args.work / "eval" / language / (arm + variant(args)), args)
            arms[arm]["train_seconds"] = seconds
            arms[arm]["eval_seconds"] = round(time.perf_counter() - start, 1)
            results["tasks"] = list(max((a["tasks"] for a in arms.values()), key=len))
            # written after every arm, so a long run that is stopped keeps what it measured
            results["language_models"][language] = {
                "arms": {name: {k: v for k, v in values.items() if k != "per_query_ndcg"} for name, values in arms.items()},
                "comparisons": comparisons(arms),
            }
            write_results(results, args.results)
    if not args.train_only:
        print(markdown(results))


if __name__ == "__main__":
    main()
