"""How much multi-vector retrieval can give on these sets once *trained*: all-MiniLM-L6-v2 fine-tuned as a
ColBERT-style model (every token a vector, MaxSim) against the same backbone fine-tuned as one vector (mean pooling,
cosine): same pairs, steps, batch, learning rate and temperature; each trained model scored both ways; the untrained
backbone both ways beside them; on the training domain's test split and on a domain it never saw.

    .venv/bin/python benchmarks/mmr_training/late_interaction_ceiling.py     # ~45 min on 2 cores
    .venv/bin/python benchmarks/mmr_training/late_interaction_ceiling.py --scorings tokens --no-eval \
        --save-dir /tmp/metaembed-mmr-benchmark/teachers   # only train and save the token model (a distillation teacher)

Why (issue 14): MetaEmbed's meta vectors are a budgeted summary of the item's token states, so a token-level model
trained on the same data bounds what a larger budget can add over one vector. If the trained token model is not
clearly above the trained single vector, the data and backbone, not the MMR recipe, keep the curve flat.
Reads the sets `run.py --passages sources --cross-domain pydocs` builds under --work-dir (or any pair given as
--train-set / --cross-set, e.g. the multi-facet Python-docs set `pydocs-dense-1000-200` with
`--results late_interaction_ceiling_pydocs_dense`). Writes benchmarks/results/<--results>.{json,md}.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup  # noqa: E402

from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.evaluation import evaluate_run  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.model.pretrained import minilm_path  # noqa: E402
from metaembed.training.regularizers import late_interaction_scores, mean_pooled  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arms import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCORINGS = ("mean", "tokens")
"""mean: mean pooling + cosine (one vector); tokens: ColBERT-style MaxSim over every token (mean over the query's)."""


def scores_of(scoring: str, queries: tuple[torch.Tensor, torch.Tensor], documents: tuple[torch.Tensor, torch.Tensor],
              chunk: int = 8) -> torch.Tensor:
    """(n_q, n_d) scores from (states, mask) pairs; token scoring in query chunks (it builds n_q x S_q x n_d x S_d)."""
    if scoring == "mean":
        return mean_pooled(queries[0].float(), queries[1]) @ mean_pooled(documents[0].float(), documents[1]).T
    return torch.cat([late_interaction_scores(queries[0][i : i + chunk], queries[1][i : i + chunk], *documents)
                      for i in range(0, len(queries[0]), chunk)])


def token_states(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, S, H) last hidden states (bf16 autocast on CPU) and their (n, S) mask, padded to the longest."""
    states, masks = [], []
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(texts), batch_size):
            features = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
            states.append(model(**features).last_hidden_state.float())
            masks.append(features["attention_mask"].bool())
    width = max(s.shape[1] for s in states)
    return (torch.cat([F.pad(s, (0, 0, 0, width - s.shape[1])) for s in states]),
            torch.cat([F.pad(m, (0, width - m.shape[1])) for m in masks]))


def train(scoring: str, rows: list[dict], args: argparse.Namespace):
    """The backbone fine-tuned with InfoNCE (in-batch and one hard negative per query) under ``scoring``."""
    torch.manual_seed(0)
    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * args.steps), args.steps)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    model.train()
    tokens = lambda texts: tokenizer(texts, padding=True, truncation=True, max_length=args.max_length,  # noqa: E731
                                     return_tensors="pt")
    for step in range(args.steps):
        batch = [rows[order[(step * args.batch_size + i) % len(rows)]] for i in range(args.batch_size)]
        queries = tokens([row["query"] for row in batch])
        documents = tokens([row["positive"] for row in batch] + [row["negatives"][0] for row in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            query_states = model(**queries).last_hidden_state
            document_states = model(**documents).last_hidden_state
        scores = scores_of(scoring, (query_states, queries["attention_mask"].bool()),
                           (document_states, documents["attention_mask"].bool()), chunk=args.batch_size)
        loss = F.cross_entropy(scores.float() / args.temperature, torch.arange(len(batch)))
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"  {scoring} step {step + 1}/{args.steps} loss {loss.item():.4f}", flush=True)
    return tokenizer, model


def evaluate(model, tokenizer, task, max_length: int) -> dict[str, dict[str, float]]:
    """Per scoring: the per-query nDCG@10 of the test split."""
    query_ids, doc_ids = list(task.queries), list(task.corpus)
    queries = token_states(model, tokenizer, [task.queries[q].text for q in query_ids], max_length)
    documents = token_states(model, tokenizer, [task.corpus[d].text for d in doc_ids], max_length)
    per_query = {}
    for scoring in SCORINGS:
        top = scores_of(scoring, queries, documents).topk(10, dim=1).indices.tolist()
        run = {qid: [doc_ids[j] for j in row] for qid, row in zip(query_ids, top)}
        per_query[scoring] = {q: v["ndcg@10"] for q, v in evaluate_run(run, task.qrels, ("ndcg@10",))[1].items()}
    return per_query


def mean(values: dict[str, float]) -> float:
    return round(100 * sum(values.values()) / len(values), 2)


def difference(first: dict[str, float], second: dict[str, float]) -> str:
    found = paired_bootstrap(first, second)
    return f"{100 * found['difference']:+.2f} [{100 * found['ci95_low']:+.2f}, {100 * found['ci95_high']:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/metaembed-mmr-benchmark")
    parser.add_argument("--train-set", default="debian-sources-1000-3000", help="folder with train.jsonl and beir/")
    parser.add_argument("--cross-set", default="pydocs-1000-200", help="folder with beir/ (a domain never trained on)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=0.03)
    parser.add_argument("--max-length", type=int, default=128, help="text tokens per item (as the benchmark's arms)")
    parser.add_argument("--eval-max-length", type=int, default=None,
                        help="text tokens per test item (default: --max-length; as run.py's --eval-max-length)")
    parser.add_argument("--scorings", nargs="+", choices=SCORINGS, default=list(SCORINGS), help="which models to train")
    parser.add_argument("--save-dir", default=None, help="save each trained model (and tokenizer) to SAVE_DIR/<scoring>")
    parser.add_argument("--no-eval", action="store_true", help="train (and save) only")
    parser.add_argument("--results", default="late_interaction_ceiling",
                        help="file stem under benchmarks/results/ (one per training set)")
    args = parser.parse_args()
    args.eval_max_length = args.eval_max_length or args.max_length
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work_dir)
    rows = [json.loads(line) for line in (work / args.train_set / "train.jsonl").read_text().splitlines() if line.strip()]
    sets = {"test": load_beir(work / args.train_set / "beir", "test"),
            "across domains": load_beir(work / args.cross_set / "beir", "test")}
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]] = {}  # set -> model -> scoring -> query -> nDCG
    seconds = {}
    tokenizer, backbone = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path())
    for name, task in sets.items() if not args.no_eval else ():
        per_query.setdefault(name, {})["untrained"] = evaluate(backbone, tokenizer, task, args.eval_max_length)
    for scoring in args.scorings:
        start = time.perf_counter()
        tokenizer, model = train(scoring, rows, args)
        seconds[scoring] = round(time.perf_counter() - start, 1)
        if args.save_dir:
            model.save_pretrained(Path(args.save_dir) / scoring)
            tokenizer.save_pretrained(Path(args.save_dir) / scoring)
        for name, task in sets.items() if not args.no_eval else ():
            per_query[name][f"trained as {scoring}"] = evaluate(model, tokenizer, task, args.eval_max_length)
            print(name, scoring, {s: mean(v) for s, v in per_query[name][f"trained as {scoring}"].items()}, flush=True)
    if args.no_eval or set(args.scorings) != set(SCORINGS):
        return
    results = {
        "backbone": "all-MiniLM-L6-v2", "train_set": args.train_set, "cross_set": args.cross_set,
        "train_rows": len(rows), "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "temperature": args.temperature, "max_text_tokens": args.max_length,
        "max_text_tokens_at_test": args.eval_max_length, "machine": machine(),
        "training_seconds": seconds,
        "ndcg@10": {name: {model: {s: mean(v) for s, v in scorings.items()} for model, scorings in models.items()}
                    for name, models in per_query.items()},
        "paired": {name: {
            "trained tokens (tokens) - trained mean (mean)": difference(models["trained as tokens"]["tokens"],
                                                                         models["trained as mean"]["mean"]),
            "trained tokens (tokens) - untrained (mean)": difference(models["trained as tokens"]["tokens"],
                                                                      models["untrained"]["mean"]),
            "trained mean (mean) - untrained (mean)": difference(models["trained as mean"]["mean"], models["untrained"]["mean"]),
            "untrained (tokens) - untrained (mean)": difference(models["untrained"]["tokens"], models["untrained"]["mean"]),
        } for name, models in per_query.items()},
        "queries": {name: len(task.queries) for name, task in sets.items()},
        "documents": {name: len(task.corpus) for name, task in sets.items()},
    }
    out = REPO / "benchmarks" / "results" / f"{args.results}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    sizes = ", ".join(f"{n}: {results['queries'][n]} q / {results['documents'][n]} docs" for n in sets)
    lines = ["# The late-interaction ceiling: all-MiniLM-L6-v2 trained token by token against trained as one vector", "",
             f"Trained on `{args.train_set}` ({len(rows)} rows), {args.steps} steps of batch {args.batch_size} (+1 hard "
             f"negative), learning rate {args.learning_rate}, temperature {args.temperature}, {args.max_length} text "
             f"tokens ({args.eval_max_length} at test), bf16 autocast; {machine()}; training {seconds['mean']:.0f} s (mean) and {seconds['tokens']:.0f} s "
             "(tokens). Tested on its test split and across domains on "
             f"`{args.cross_set}` ({sizes}).",
             "", "nDCG@10 (x100); rows: the model, columns: how it scores (mean = mean pooling + cosine, one vector; "
             "tokens = MaxSim over every token vector):", "",
             "| set | model | mean | tokens |", "|---|---|---|---|"]
    for name, models in results["ndcg@10"].items():
        lines += [f"| {name} | {model} | {v['mean']:.2f} | {v['tokens']:.2f} |" for model, v in models.items()]
    lines += ["", "Paired differences of nDCG@10 (x100), 95% bootstrap intervals over the queries:", "",
              "| set | comparison | difference |", "|---|---|---|"]
    lines += [f"| {name} | {comparison} | {value} |" for name, comparisons in results["paired"].items()
              for comparison, value in comparisons.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
