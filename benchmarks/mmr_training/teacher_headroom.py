"""How much a fine-grained teacher could give: the plain backbone as one vector vs token by token.

    .venv/bin/python benchmarks/mmr_training/teacher_headroom.py                   # ~6 min on 2 cores
    .venv/bin/python benchmarks/mmr_training/teacher_headroom.py --max-length 448  # whole documents, ~25 min
    .venv/bin/python benchmarks/mmr_training/teacher_headroom.py --max-length 448 --sets "Dense Python docs (test)" \
        --results teacher_headroom_pydocs_dense

all-MiniLM-L6-v2, untrained, on the test splits `run.py --passages sources --cross-domain pydocs` builds
(run that first: it writes the sets under --work-dir). Three scorings of the same token states: mean pooling +
cosine (what users have), ColBERT-style MaxSim over every token vector (the teacher of ``distill_weight``),
MaxSim over the means of nested windows (whole item, halves, quarters, ...: what ``meta_attention:
document_windows`` vectors read, and what the window anchor pulls them towards) at growing budgets, and MaxSim
over a document's facets (each of its lines, a package's paragraph or a module member, mean-pooled on its own;
the query mean-pooled whole): what one vector per facet could give; and the best sentence (the teacher of
``distill_teacher: sentences``, the training code's own cut and encoding); and the untrained MetaEmbed models of
``meta_attention: document_lines`` / ``document_segments`` (mean first vector, residual at zero: vector 1 the item's
mean, vector v the mean of its line v - 1, the lines read with the whole item or apart) at growing budgets. Writes
benchmarks/results/teacher_headroom.json and .md (``teacher_headroom_<L>`` for another --max-length).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.evaluation import evaluate_run  # noqa: E402
from metaembed.model.pretrained import minilm_path  # noqa: E402
import metaembed  # noqa: E402
from metaembed.training.regularizers import (BackboneTeacher, late_interaction_scores, mean_pooled,  # noqa: E402
                                             teacher_best_sentence, window_means)

REPO = Path(__file__).resolve().parents[2]
WINDOW_BUDGETS = ((1, 1), (1, 4), (1, 16), (1, 64), (4, 8), (16, 64))
LINE_BUDGETS = ((1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (1, 64))
LINE_LAYOUTS = ("document_lines", "document_segments")
SETS = {"Debian sources (test)": "debian-sources-1000-3000/beir", "Python docs (test)": "pydocs/beir",
        "Dense Python docs (test)": "pydocs-dense-1000-200/beir"}
DEFAULT_SETS = ["Debian sources (test)", "Python docs (test)"]


def padded(token_states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, S, H) token states and their (n, S) mask from a list of (S_i, H)."""
    width = max(x.shape[0] for x in token_states)
    hidden = torch.zeros(len(token_states), width, token_states[0].shape[1])
    mask = torch.zeros(len(token_states), width, dtype=torch.bool)
    for row, states in enumerate(token_states):
        hidden[row, : len(states)], mask[row, : len(states)] = states.float(), True
    return hidden, mask


def ndcg10(scores: torch.Tensor, query_ids: list[str], doc_ids: list[str], qrels) -> float:
    top = scores.topk(10, dim=1).indices.tolist()
    run = {qid: [doc_ids[j] for j in row] for qid, row in zip(query_ids, top)}
    return evaluate_run(run, qrels, ("ndcg@10",))[0]["ndcg@10"]


def facet_maxsim(model, queries: torch.Tensor, documents: list[str], batch_size: int = 64) -> torch.Tensor:
    """(n_q, n_d) scores: each document's non-empty lines mean-pooled on their own, the best line per document."""
    facets = [[line for line in text.splitlines() if line.strip()] or [text] for text in documents]
    vectors = model.encode([line for lines in facets for line in lines], batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=True)
    scores, start = torch.empty(len(queries), len(documents)), 0
    for column, lines in enumerate(facets):
        scores[:, column] = (queries @ vectors[start : start + len(lines)].T).amax(dim=1)
        start += len(lines)
    return scores


def line_layout_scores(layout: str, queries: list[str], documents: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Per budget of LINE_BUDGETS, (n_q, n_d) scores of the untrained MetaEmbed model of ``layout`` (its queries are
    the backbone's mean pooling: every query vector is the mean while the residual is zero)."""
    model = metaembed.MetaEmbed.from_backbone(minilm_path(), 16, 64, meta_attention=layout, first_vector="mean",
                                              meta_residual=True, max_seq_length=max_length, device="cpu").eval()
    query_vectors = model.encode_query(queries, batch_size=64)
    document_vectors = model.encode_document(documents, batch_size=16, show_progress_bar=True)
    return {f"{r_q},{r_c}": metaembed.maxsim(query_vectors.float(), document_vectors.float(), r_q, r_c)
            for r_q, r_c in LINE_BUDGETS}


def best_sentence(model, queries: torch.Tensor, documents: list[str], batch_size: int = 32) -> torch.Tensor:
    """(n_q, n_d) scores of the sentence teacher (metaembed.training.regularizers), on the model's own tokens."""
    teacher = BackboneTeacher(model[0].auto_model, 10**9, model.tokenizer.pad_token_id, tokenizer=model.tokenizer)
    columns = []
    for start in range(0, len(documents), batch_size):
        features = model.tokenize(documents[start : start + batch_size])
        vectors, present = teacher.sentence_vectors(features)
        columns.append((vectors, present))
    width = max(v.shape[1] for v, _ in columns)
    vectors = torch.cat([torch.nn.functional.pad(v, (0, 0, 0, width - v.shape[1])) for v, _ in columns])
    present = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m in columns])
    return teacher_best_sentence(queries, [(vectors, present)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/metaembed-mmr-benchmark")
    parser.add_argument("--max-length", type=int, default=128, help="text tokens per item (as the benchmark's)")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=DEFAULT_SETS,
                        help="the dense set is built by run.py --passages pydocs-dense")
    parser.add_argument("--results", help="results file stem (default teacher_headroom[_<max-length>])")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = args.max_length
    results = {"backbone": "all-MiniLM-L6-v2 (untrained)", "max_text_tokens": args.max_length, "ndcg@10": {}}
    for name, folder in ((name, SETS[name]) for name in args.sets):
        task = load_beir(Path(args.work_dir) / folder, "test")
        query_ids, doc_ids = list(task.queries), list(task.corpus)
        encode = lambda texts: model.encode(texts, batch_size=64, output_value="token_embeddings", show_progress_bar=True)  # noqa: E731
        queries, query_mask = padded(encode([task.queries[q].text for q in query_ids]))
        documents, document_mask = padded(encode([task.corpus[d].text for d in doc_ids]))
        query_means = mean_pooled(queries, query_mask)
        mean_scores = query_means @ mean_pooled(documents, document_mask).T
        facet_scores = facet_maxsim(model, query_means, [task.corpus[d].text for d in doc_ids])
        sentence_scores = best_sentence(model, query_means, [task.corpus[d].text for d in doc_ids])
        token_scores = torch.cat([late_interaction_scores(queries[i : i + 16], query_mask[i : i + 16], documents, document_mask)
                                  for i in range(0, len(query_ids), 16)])
        query_windows, document_windows = window_means(queries, query_mask, 16), window_means(documents, document_mask, 64)
        line_scores = {layout: line_layout_scores(layout, [task.queries[q].text for q in query_ids],
                                                  [task.corpus[d].text for d in doc_ids], args.max_length)
                       for layout in LINE_LAYOUTS}
        results["ndcg@10"][name] = {
            "mean_pooling": round(ndcg10(mean_scores, query_ids, doc_ids, task.qrels), 4),
            "token_maxsim": round(ndcg10(token_scores, query_ids, doc_ids, task.qrels), 4),
            "facet_maxsim": round(ndcg10(facet_scores, query_ids, doc_ids, task.qrels), 4),
            "best_sentence": round(ndcg10(sentence_scores, query_ids, doc_ids, task.qrels), 4),
            "nested_window_means": {
                f"{r_q},{r_c}": round(ndcg10(metaembed.maxsim(query_windows, document_windows, r_q, r_c), query_ids,
                                             doc_ids, task.qrels), 4) for r_q, r_c in WINDOW_BUDGETS},
            **{f"untrained_{layout}": {budget: round(ndcg10(scores, query_ids, doc_ids, task.qrels), 4)
                                       for budget, scores in line_scores[layout].items()} for layout in LINE_LAYOUTS},
            "queries": len(query_ids), "documents": len(doc_ids),
        }
        print(name, results["ndcg@10"][name], flush=True)
    stem = args.results or ("teacher_headroom" if args.max_length == 128 else f"teacher_headroom_{args.max_length}")
    out = REPO / "benchmarks" / "results" / f"{stem}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Teacher headroom", "", f"Untrained all-MiniLM-L6-v2, {args.max_length} text tokens, nDCG@10 (x100):", "",
             "| test set | mean pooling (one vector) | token MaxSim (teacher) | facet MaxSim (one vector per line) "
             "| best sentence (sentence teacher) |", "|---|---|---|---|---|"]
    lines += [f"| {name} ({v['queries']} q / {v['documents']} docs) | {100 * v['mean_pooling']:.2f} | "
              f"{100 * v['token_maxsim']:.2f} | {100 * v['facet_maxsim']:.2f} | {100 * v['best_sentence']:.2f} |"
              for name, v in results["ndcg@10"].items()]
    lines += ["", "MaxSim over nested-window means (window r_q of the query, r_c of the document; (1,1) = mean pooling):", "",
              "| test set | " + " | ".join(f"({q},{c})" for q, c in WINDOW_BUDGETS) + " |", "|---|" + "---|" * len(WINDOW_BUDGETS)]
    lines += [f"| {name} | " + " | ".join(f"{100 * v['nested_window_means'][f'{q},{c}']:.2f}" for q, c in WINDOW_BUDGETS) + " |"
              for name, v in results["ndcg@10"].items()]
    lines += ["", "Untrained MetaEmbed models with a vector per document line (mean first vector, residual at zero; "
              "document_lines: each line's mean over the whole item's token states; document_segments: the lines read "
              "apart):", "", "| test set | layout | " + " | ".join(f"({q},{c})" for q, c in LINE_BUDGETS) + " |",
              "|---|---|" + "---|" * len(LINE_BUDGETS)]
    lines += [f"| {name} | {layout} | " + " | ".join(f"{100 * v[f'untrained_{layout}'][f'{q},{c}']:.2f}" for q, c in LINE_BUDGETS)
              + " |" for name, v in results["ndcg@10"].items() for layout in LINE_LAYOUTS]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
