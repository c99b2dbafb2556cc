"""The quickstart: MetaEmbed end to end on data this machine already has, in a few minutes on a CPU.

Documentation this machine has becomes a retrieval set (by default a Python standard-library module's members, a
line each, as a multi-facet document and one member's summary as the query; ``data="sources"``: a Debian source
package's binaries -> one binary's summary; ``data="descriptions"``: a Debian package summary -> its own description);
all-MiniLM-L6-v2 is fine-tuned with MMR, a vector per document line; the test corpus is indexed at the full document
budget; every budget is evaluated next to the plain backbone; ``budget="auto"`` is calibrated on the dev queries and
stored in the index. Each stage leaves its result in the working folder and is reused by the next run (``fresh=True``
rebuilds everything).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from metaembed.budgets import PAPER_BUDGETS, clip_budgets
from metaembed.model.pretrained import minilm_path


@dataclass
class QuickstartSettings:
    """Sizes chosen so the whole run fits in about ten minutes on 2 CPU cores."""

    work_dir: Path = Path("metaembed-quickstart")
    model: str | None = None
    """A trained MetaEmbed checkpoint (folder or hub id) to use instead of training one."""
    fresh: bool = False
    data: str = "pydocs"
    """``pydocs`` (multi-facet, one line per member: metaembed.data.pydocs, DENSE), ``sources`` (multi-facet, a line
    per binary package: metaembed.data.debian_sources) or ``descriptions`` (one topic: metaembed.data.debian)."""
    train_steps: int = 80
    """80 steps of batch 16 (~0.8 epochs of the Python docs' 1,530 pairs): at 40 the rise from (1,1) to (16,64)
    depended on the seed (+3.6, +2.3, +4.0 nDCG@10 for seeds 0-2); at 80 the weakest seed gives +3.1 [+1.6, +4.6]."""
    batch_size: int = 16
    max_text_tokens: int | None = None
    """Training length; None: 128 (a source package's document is ~110 tokens, median; up to ~215, 95th percentile),
    256 for ``pydocs``, whose documents (up to 300 words) are then read whole (448 tokens) when indexed."""
    corpus_size: int = 2000
    """Documents in the test corpus of ``sources`` and ``descriptions`` (``pydocs``: the test and dev modules')."""
    test_queries: int = 500
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


DATA_SETS = {
    "pydocs": "Python standard-library members' summaries -> their module's documentation (a line per member)",
    "sources": "Debian binary package summaries -> their source package's document (several binaries each)",
    "descriptions": "Debian package summaries -> descriptions",
}


class Quickstart:
    """Runs the stages in order, saying at each one whether it builds or reuses."""

    def __init__(self, settings: QuickstartSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.work = Path(settings.work_dir)
        self.data_dir = self.work / "data"
        self.train_dir = self.work / "train"
        self.index_dir = self.work / "index"
        self.eval_dir = self.work / "eval"
        self.cache_dir = self.work / "cache"

    def stage(self, number: int, title: str) -> None:
        self.console.rule(f"[bold]{number}/6 {title}")

    # ------------------------------------------------------------------------------------ stages
    def build_data(self):
        from metaembed.data.debian import DebianRetrievalPaths, build_debian_retrieval_set
        from metaembed.data.debian_sources import build_debian_sources_retrieval_set
        from metaembed.data.pydocs import DENSE, build_pydocs_retrieval_set

        if self.settings.data not in DATA_SETS:
            raise ValueError(f"data must be one of {sorted(DATA_SETS)}, got {self.settings.data!r}")
        self.stage(1, f"Data: {DATA_SETS[self.settings.data]}")
        paths = DebianRetrievalPaths(
            root=self.data_dir, beir=self.data_dir / "beir", train_jsonl=self.data_dir / "train.jsonl",
            dev_jsonl=self.data_dir / "dev.jsonl", stats=self.data_dir / "stats.json",
        )
        if paths.stats.is_file() and paths.train_jsonl.is_file():
            self.console.print(f"Reusing the retrieval set in {self.data_dir}")
        elif self.settings.data == "pydocs":
            paths = build_pydocs_retrieval_set(  # no distractor documents: every other family trains
                self.data_dir, seed=self.settings.seed, num_test_queries=self.settings.test_queries,
                num_dev_queries=min(200, self.settings.test_queries), corpus_size=1, **DENSE,
            )
        else:
            build = build_debian_sources_retrieval_set if self.settings.data == "sources" else build_debian_retrieval_set
            paths = build(
                self.data_dir, seed=self.settings.seed, num_test_queries=self.settings.test_queries,
                num_dev_queries=min(200, self.settings.test_queries), corpus_size=self.settings.corpus_size,
            )
        stats = json.loads(paths.stats.read_text())
        self.console.print(_describe_stats(stats))
        return paths

    def train_model(self, train_jsonl: Path) -> str:
        from metaembed.training import TrainConfig, train

        self.stage(2, "Train: MMR fine-tuning of all-MiniLM-L6-v2")
        if self.settings.model:
            self.console.print(f"Using the given model {self.settings.model} (no training)")
            return self.settings.model
        final = self.train_dir / "model"
        if (final / "modules.json").is_file():
            self.console.print(f"Reusing the trained model in {final}")
            return str(final)
        if self.train_dir.exists():
            shutil.rmtree(self.train_dir)  # an interrupted run: start the (short) training again
        pydocs = self.settings.data == "pydocs"
        config = TrainConfig(
            model=minilm_path(), train_jsonl=[str(train_jsonl)], output_dir=str(self.train_dir),
            max_steps=self.settings.train_steps, batch_size=self.settings.batch_size,
            max_seq_length=self.settings.max_text_tokens or (256 if pydocs else 128),
            inference_max_seq_length=448 if pydocs else None,
            # a vector per document line: a larger budget reads the members of a module, the binaries of a package
            meta_attention="document_lines",
            learning_rate=5e-5, meta_token_learning_rate=1e-3,
            save_steps=10 * self.settings.train_steps, logging_steps=10, seed=self.settings.seed,
        )
        self.console.print(
            f"{config.max_steps} steps of batch {config.batch_size} (one hard negative each), groups {config.groups}, "
            f"temperature {config.temperature}, a vector per document line (meta_attention {config.meta_attention})"
        )
        result = train(config)
        self.console.print(f"Trained in {result.global_step} steps, final loss {result.training_loss:.3f} -> {result.model_path}")
        return result.model_path

    def build_index(self, model, model_path: str, beir_dir: Path) -> Any:
        from metaembed.data.beir import load_beir
        from metaembed.evaluation import EncodingCache
        from metaembed.evaluation.encoding import DOCUMENT, encode_items
        from metaembed.index import MultiVectorIndex, build_index
        from metaembed.index.corpus import CorpusRecord

        self.stage(3, "Index: the test corpus at the full document budget")
        task = load_beir(beir_dir, split="test")
        ids = list(task.corpus)
        if MultiVectorIndex.exists(self.index_dir):
            index = MultiVectorIndex.open(self.index_dir, mode="r")
            if len(index) == len(ids):
                self.console.print(f"Reusing the index in {self.index_dir} ({len(index)} documents)")
                return index
            index.close()
            shutil.rmtree(self.index_dir)
        # encoded through the evaluation's cache, so the next stage finds the corpus already encoded
        encoded, _ = encode_items(
            model, DOCUMENT, ids, [task.corpus[i] for i in ids], batch_size=self.settings.batch_size,
            prompt=task.document_prompt, cache=EncodingCache(self.cache_dir), where=f"{beir_dir} corpus",
        )
        records = [CorpusRecord(i, task.corpus[i], {"text": task.corpus[i].text, "title": i}) for i in encoded.ids]
        build_index(model, records, self.index_dir, model_name=model_path, vectors=encoded.vectors,
                    chunk_size=max(len(records), 1), corpus_name=str(beir_dir / "corpus.jsonl"), progress=False)
        index = MultiVectorIndex.open(self.index_dir, mode="r")
        self.console.print(f"Indexed {len(index)} documents x {model.num_document_meta_tokens} vectors in {self.index_dir}")
        return index

    def evaluate(self, model, model_path: str, beir_dir: Path) -> dict[str, Any]:
        from metaembed.evaluation import BACKBONE, SweepSettings, evaluate, terminal_table

        self.stage(4, "Evaluate: every budget on the test split")
        budgets = clip_budgets(PAPER_BUDGETS, model.num_query_meta_tokens, model.num_document_meta_tokens)
        results = evaluate(
            model, beir_dir, budgets, self.eval_dir, format="beir", split="test",
            settings=SweepSettings(cache_dir=self.cache_dir, metrics=("ndcg@10", "recall@10", "mrr@10", "recall@1")),
            model_name=model_path,
            # the backbone a user already has (recorded in the model), as the yardstick
            baselines={BACKBONE: BACKBONE},
        )
        self.console.print(terminal_table(results), soft_wrap=True, markup=False, highlight=False)
        self.console.print(f"Plot: {self.eval_dir / 'budget_curve.png'}   Table: {self.eval_dir / 'results.md'}")
        return results

    def calibrate_auto(self, model, beir_dir: Path) -> dict[str, Any]:
        """``budget="auto"`` calibrated on the dev queries and stored in the index (``metaembed search --budget auto``
        uses it), then run on the test queries against the index's own max budget."""
        from metaembed.budgets import Budget
        from metaembed.data.beir import load_beir
        from metaembed.evaluation import EncodingCache, evaluate_run
        from metaembed.evaluation.encoding import QUERY, encode_items
        from metaembed.index import MultiVectorIndex
        from metaembed.index.calibration import calibrate_auto_margin

        self.stage(5, "Auto: per-query budgets, calibrated on the dev queries")

        def judged_queries(split: str):
            task = load_beir(beir_dir, split=split)
            ids = [q for q in task.queries if q in task.qrels]
            encoded, _ = encode_items(model, QUERY, ids, [task.queries[q] for q in ids], batch_size=self.settings.batch_size,
                                      prompt=task.query_prompt, cache=EncodingCache(self.cache_dir),
                                      where=f"{beir_dir} {split} queries", progress=False)
            return task.qrels, encoded

        dev_qrels, dev = judged_queries("dev")
        test_qrels, test = judged_queries("test")
        with MultiVectorIndex.open(self.index_dir, mode="a") as index:
            calibration = calibrate_auto_margin(index, dev.vectors, dev.ids, dev_qrels)
            calibration.store(index)
            auto = index.search(test.vectors, k=10, budget="auto")
            fixed = index.search(test.vectors, k=10, budget=calibration.max_budget)
        ndcg = {name: evaluate_run({q: r.ids for q, r in zip(test.ids, hits)}, test_qrels, ["ndcg@10"])[0]["ndcg@10"]
                for name, hits in (("auto", auto), ("fixed", fixed))}
        cost = sum(r.cost for r in auto) / max(1, sum(r.cost for r in fixed))
        used = Counter(str(Budget(*r.budget)) for r in auto)
        stopped = {rung: used[rung] / max(1, len(auto)) for rung in calibration.stopped}
        top = calibration.max_budget
        self.console.print(
            f"Calibrated on {len(dev.ids)} dev queries (keep {calibration.target:.0%} of what ({top}) adds over (1,1)): "
            f"margin {calibration.margin:.4f}, {calibration.candidates} candidates; stored in {self.index_dir}")
        self.console.print(
            f"On the {len(test.ids)} test queries: nDCG@10 {100 * ndcg['auto']:.2f} with auto, {100 * ndcg['fixed']:.2f} at "
            f"({top}) ({ndcg['auto'] / ndcg['fixed']:.1%}), at {cost:.1%} of ({top})'s dot products; stopped at "
            + ", ".join(f"({rung}) {share:.0%}" for rung, share in stopped.items()), soft_wrap=True)
        return {"margin": calibration.margin, "candidates": calibration.candidates, "ndcg@10": ndcg["auto"],
                "max_budget_ndcg@10": ndcg["fixed"], "cost_share": cost, "stopped": stopped}

    def _previous_data(self) -> str | None:
        """The data set of the retrieval set already in the working folder (None when there is none)."""
        stats = self.data_dir / "stats.json"
        if not stats.is_file():
            return None
        recorded = json.loads(stats.read_text())
        return "pydocs" if "modules_walked" in recorded else "sources" if "max_packages" in recorded else "descriptions"

    # ------------------------------------------------------------------------------------ all
    def run(self) -> dict[str, Any]:
        from metaembed.model import MetaEmbed

        if self.settings.fresh and self.work.exists():
            self.console.print(f"--fresh: removing {self.work}")
            shutil.rmtree(self.work)
        elif self._previous_data() not in (None, self.settings.data):
            self.console.print(f"{self.work} holds a run on the {self._previous_data()!r} data: removing it")
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def timed(name: str, function, *args):
            begin = time.perf_counter()
            value = function(*args)
            timings[name] = round(time.perf_counter() - begin, 1)
            return value

        paths = timed("data", self.build_data)
        model_path = timed("train", self.train_model, paths.train_jsonl)
        model = MetaEmbed.from_pretrained(model_path)
        index = timed("index", self.build_index, model, model_path, paths.beir)
        results = timed("evaluate", self.evaluate, model, model_path, paths.beir)
        index.close()
        auto = timed("auto", self.calibrate_auto, model, paths.beir)
        if not self.settings.model:  # the model trained here: its card shows this run's budget curve
            from metaembed.evaluation.report import budget_curve

            model.attach_budget_curve(model_path, budget_curve(results))
        timings["total"] = round(time.perf_counter() - started, 1)
        self.stage(6, "Next")
        self.console.print(f"Done in {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')}).")
        example = "parse command-line options" if self.settings.data == "pydocs" else "a text editor for the terminal"
        self.console.print("Try it:")
        self.console.print(f"  .venv/bin/metaembed search --index {self.index_dir} --query '{example}' --budget 4,8", soft_wrap=True)
        self.console.print(f"  .venv/bin/metaembed search --index {self.index_dir} --query '{example}' --budget auto", soft_wrap=True)
        self.console.print(f"  .venv/bin/metaembed serve --index {self.index_dir} --model {model_path}   # then open http://127.0.0.1:8000/", soft_wrap=True)
        (self.work / "quickstart.json").write_text(
            json.dumps({"timings": timings, "model": model_path, "data": self.settings.data, "auto": auto}, indent=2))
        return {"results": results, "timings": timings, "model_path": model_path, "auto": auto}


def _describe_stats(stats: dict[str, Any]) -> str:
    interesting = {key: value for key, value in stats.items() if isinstance(value, (int, float, str))}
    return ", ".join(f"{key} {value}" for key, value in interesting.items())
