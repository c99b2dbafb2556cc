"""The quickstart: MetaEmbed end to end on data this machine already has, in a few minutes on a CPU.

Documentation this machine has becomes a retrieval set (by default a Python standard-library module's members, a
line each, as a multi-facet document and one member's summary as the query; ``data="sources"``: a Debian source
package's binaries -> one binary's summary; ``data="descriptions"``: a Debian package summary -> its own description);
all-MiniLM-L6-v2 is fine-tuned with MMR, a vector per document line; the test corpus is indexed at the full document
budget; every budget is evaluated next to the plain backbone; ``budget="auto"`` is calibrated on the dev queries and
stored in the index. ``data="images"`` is the multimodal half: Debian's clip art and application icons with their
captions (metaembed.data.image_sets); a vision-language model composed from MobileNetV2 and MiniLM is warm-started and
MMR-trained, the test images are indexed, and the three tasks (text -> image, image -> text, text -> image+text) are
evaluated at every budget next to the frozen towers with a ridge map between them (and MiniLM on the text task).
Each stage leaves its result in the working folder and is reused by the next run (``fresh=True`` rebuilds
everything).
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
    """Sizes chosen so the whole run fits in about ten minutes on 2 CPU cores (None: the data set's own default,
    :data:`IMAGE_DEFAULTS` for ``data="images"``)."""

    work_dir: Path | None = None
    """None: ``metaembed-quickstart``, or ``metaembed-quickstart-images`` for the image data."""
    model: str | None = None
    """A trained MetaEmbed checkpoint (folder or hub id) to use instead of training one."""
    fresh: bool = False
    data: str = "pydocs"
    """``pydocs`` (multi-facet, one line per member: metaembed.data.pydocs, DENSE), ``sources`` (multi-facet, a line
    per binary package: metaembed.data.debian_sources), ``descriptions`` (one topic: metaembed.data.debian) or
    ``images`` (clip art and icons with captions: metaembed.data.image_sets)."""
    train_steps: int | None = None
    """80 steps of batch 16 (~0.8 epochs of the Python docs' 1,530 pairs): at 40 the rise from (1,1) to (16,64)
    depended on the seed (+3.6, +2.3, +4.0 nDCG@10 for seeds 0-2); at 80 the weakest seed gives +3.1 [+1.6, +4.6]."""
    batch_size: int | None = None
    """None: 16 (32 for images)."""
    max_text_tokens: int | None = None
    """Training length; None: 128 (a source package's document is ~110 tokens, median; up to ~215, 95th percentile),
    256 for ``pydocs``, whose documents (up to 300 words) are then read whole (448 tokens) when indexed."""
    corpus_size: int | None = None
    """Documents in the test corpus of ``sources`` and ``descriptions`` (None: 2,000; ``pydocs``: the test and dev
    modules'), of each task of ``images`` (None: 600)."""
    test_queries: int | None = None
    """None: 500 (200 per task for images)."""
    max_images: int = 1500
    """``images``: distinct images drawn into the set (train, dev and test together)."""
    image_package_roots: dict[str, Path] | None = None
    """``images``: already unpacked Debian package trees by package name (None: fetched into the cache; see
    metaembed.data.image_sets), and ``image_lists_dir`` the apt lists the icons' captions come from."""
    image_lists_dir: Path | None = None
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = self.data == "images"
        defaults = IMAGE_DEFAULTS if images else {"train_steps": 80, "batch_size": 16, "corpus_size": 2000,
                                                  "test_queries": 500}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.work_dir is None:
            self.work_dir = Path("metaembed-quickstart-images" if images else "metaembed-quickstart")


IMAGE_DEFAULTS = {"train_steps": 30, "batch_size": 32, "corpus_size": 600, "test_queries": 200}
"""The image half's sizes: 30 steps of batch 32 (~4 minutes on 2 cores in fp32) after the closed-form warm start
(benchmarks/results/multimodal_cpu_held_out_strength.md: the recipe, measured at 100 steps)."""
IMAGE_MIXED_WEIGHT = 0.25
"""The image cells' share of an image+text item's mean first vector in the image half (see MetaTransformer)."""


DATA_SETS = {
    "pydocs": "Python standard-library members' summaries -> their module's documentation (a line per member)",
    "sources": "Debian binary package summaries -> their source package's document (several binaries each)",
    "descriptions": "Debian package summaries -> descriptions",
    "images": "Debian clip art and application icons <-> their captions (text -> image, image -> text, "
              "text -> image+text)",
}
INDEXED_IMAGE_TASK = "text-to-image"
"""The image half indexes this task's test corpus (images alone): search it with a text or an image."""


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
        if self.settings.data == "images":
            from metaembed.data.image_sets import build_image_text_sets

            paths = build_image_text_sets(
                self.data_dir, seed=self.settings.seed, max_images=self.settings.max_images,
                num_test=self.settings.test_queries, num_dev=min(100, self.settings.test_queries),
                corpus_size=self.settings.corpus_size, package_roots=self.settings.image_package_roots,
                lists_dir=self.settings.image_lists_dir)
            if paths.reused:
                self.console.print(f"Reusing the image-text set in {self.data_dir}")
        elif paths.stats.is_file() and paths.train_jsonl.is_file():
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

    @property
    def images(self) -> bool:
        return self.settings.data == "images"

    def train_model(self, train_jsonl: Path) -> str:
        from metaembed.training import TrainConfig, train

        self.stage(2, "Train: MMR fine-tuning of " + ("a vision-language model (MobileNetV2 -> projector -> "
                                                      "all-MiniLM-L6-v2)" if self.images else "all-MiniLM-L6-v2"))
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
        config = self._image_config(train_jsonl) if self.images else TrainConfig(
            model=minilm_path(), train_jsonl=[str(train_jsonl)], output_dir=str(self.train_dir),
            max_steps=self.settings.train_steps, batch_size=self.settings.batch_size,
            max_seq_length=self.settings.max_text_tokens or (256 if pydocs else 128),
            inference_max_seq_length=448 if pydocs else None,
            # a vector per document line: a larger budget reads the members of a module, the binaries of a package
            meta_attention="document_lines",
            learning_rate=5e-5, meta_token_learning_rate=1e-3,
            save_steps=10 * self.settings.train_steps, logging_steps=10, seed=self.settings.seed,
        )
        what = ("vision tower frozen, projector and image readout warm-started in closed form (ridge strengths chosen "
                f"on held-out images), image cells {IMAGE_MIXED_WEIGHT:.0%} of an image+text item's mean" if self.images else
                f"a vector per document line (meta_attention {config.meta_attention})")
        self.console.print(
            f"{config.max_steps} steps of batch {config.batch_size} (one hard negative each), groups {config.groups}, "
            f"temperature {config.temperature}, {what}"
        )
        result = train(config)
        self.console.print(f"Trained in {result.global_step} steps, final loss {result.training_loss:.3f} -> {result.model_path}")
        return result.model_path

    def _image_config(self, train_jsonl: Path):
        """The image half's training: the multimodal benchmark's recipe (benchmarks/multimodal/run.py)."""
        from metaembed.model.pretrained import mobilenet_v2_path
        from metaembed.training import TrainConfig

        return TrainConfig(
            model=minilm_path(), vision_tower=mobilenet_v2_path(), train_jsonl=[str(train_jsonl)],
            output_dir=str(self.train_dir), max_steps=self.settings.train_steps, batch_size=self.settings.batch_size,
            num_negatives=1, learning_rate=1e-4, projector_learning_rate=1e-3, warmup_ratio=0.1,
            max_seq_length=self.settings.max_text_tokens or 96, attention_dropout=0.0, image_readout=True,
            warm_start_strength=None, mixed_image_weight=IMAGE_MIXED_WEIGHT, save_steps=10 * self.settings.train_steps, logging_steps=10,
            seed=self.settings.seed,
        )

    def build_index(self, model, model_path: str, beir_dir: Path) -> Any:
        from metaembed.data.beir import load_beir
        from metaembed.evaluation import EncodingCache
        from metaembed.evaluation.encoding import DOCUMENT, encode_items
        from metaembed.index import MultiVectorIndex, build_index
        from metaembed.index.corpus import CorpusRecord

        self.stage(3, "Index: the test corpus at the full document budget"
                   + (f" ({INDEXED_IMAGE_TASK}: images)" if self.images else ""))
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
        records = [CorpusRecord(i, task.corpus[i], _metadata(i, task.corpus[i])) for i in encoded.ids]
        build_index(model, records, self.index_dir, model_name=model_path, vectors=encoded.vectors,
                    chunk_size=max(len(records), 1), corpus_name=str(beir_dir / "corpus.jsonl"), progress=False)
        index = MultiVectorIndex.open(self.index_dir, mode="r")
        self.console.print(f"Indexed {len(index)} documents x {model.num_document_meta_tokens} vectors in {self.index_dir}")
        return index

    def evaluate(self, model, model_path: str, beir_dir: Path) -> dict[str, Any]:
        from metaembed.evaluation import BACKBONE, SweepSettings, evaluate, terminal_table
        from metaembed.evaluation.frozen_towers import FROZEN_TOWERS

        self.stage(4, "Evaluate: every budget on the test split" + (" of every task" if self.images else ""))
        budgets = clip_budgets(PAPER_BUDGETS, model.num_query_meta_tokens, model.num_document_meta_tokens)
        # the yardstick: the backbone a user already has (recorded in the model); on images first the frozen towers
        baselines: dict[str, Any] = {FROZEN_TOWERS: self._frozen_towers(model)} if self.images else {}
        baselines[BACKBONE] = BACKBONE
        results = evaluate(
            model, beir_dir, budgets, self.eval_dir, format="beir", split="test",
            settings=SweepSettings(cache_dir=self.cache_dir, metrics=("ndcg@10", "recall@10", "mrr@10", "recall@1")),
            model_name=model_path, baselines=baselines,
        )
        self.console.print(terminal_table(results), soft_wrap=True, markup=False, highlight=False)
        self.console.print(f"Plot: {self.eval_dir / 'budget_curve.png'}   Table: {self.eval_dir / 'results.md'}")
        return results

    def _frozen_towers(self, model):
        """The image tasks' yardstick, fitted on the training pairs (metaembed.evaluation.frozen_towers)."""
        from metaembed.evaluation.frozen_towers import FrozenTowers

        towers = FrozenTowers.of_model(model).fit_pairs_file(self.data_dir / "train.jsonl")
        self.console.print(f"Yardstick: {towers.describe()}", soft_wrap=True)
        return towers

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
        if "modules_walked" in recorded:
            return "pydocs"
        if "max_side" in (recorded.get("config") or {}):  # metaembed.data.image_sets records its settings so
            return "images"
        return "sources" if "max_packages" in recorded else "descriptions"

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
        indexed = paths.beir / INDEXED_IMAGE_TASK if self.images else paths.beir
        index = timed("index", self.build_index, model, model_path, indexed)
        results = timed("evaluate", self.evaluate, model, model_path, paths.beir)
        index.close()
        auto = timed("auto", self.calibrate_auto, model, indexed)
        if not self.settings.model:  # the model trained here: its card shows this run's budget curve
            from metaembed.evaluation.report import budget_curve

            model.attach_budget_curve(model_path, budget_curve(results))
        timings["total"] = round(time.perf_counter() - started, 1)
        self.stage(6, "Next")
        self.console.print(f"Done in {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')}).")
        example = {"pydocs": "parse command-line options", "images": "a red apple"}.get(self.settings.data,
                                                                                      "a text editor for the terminal")
        self.console.print("Try it:")
        self.console.print(f"  .venv/bin/metaembed search --index {self.index_dir} --query '{example}' --budget 4,8", soft_wrap=True)
        if self.images:
            picture = _example_query_image(indexed)
            self.console.print(f"  .venv/bin/metaembed search --index {self.index_dir} --query-image {picture} --budget 4,8",
                               soft_wrap=True)
        self.console.print(f"  .venv/bin/metaembed search --index {self.index_dir} --query '{example}' --budget auto", soft_wrap=True)
        self.console.print(f"  .venv/bin/metaembed serve --index {self.index_dir} --model {model_path}   # then open http://127.0.0.1:8000/", soft_wrap=True)
        (self.work / "quickstart.json").write_text(
            json.dumps({"timings": timings, "model": model_path, "data": self.settings.data, "auto": auto}, indent=2))
        return {"results": results, "timings": timings, "model_path": model_path, "auto": auto}


def _metadata(item_id: str, item) -> dict[str, Any]:
    """What the index keeps of a document for the search results and the web page (its image's absolute path: the
    page shows its thumbnail)."""
    metadata: dict[str, Any] = {"text": item.text, "title": item_id}
    if item.image is not None:
        metadata["image"] = str(Path(item.image).resolve())
    return metadata


def _example_query_image(task_dir: Path) -> Path:
    """An image query to try: the image of the first image -> text test query."""
    from metaembed.data.beir import load_beir

    queries = load_beir(task_dir.parent / "image-to-text", split="test").queries
    first = next(item for item in queries.values() if item.image is not None)
    return Path(first.image).resolve()


def _describe_stats(stats: dict[str, Any]) -> str:
    interesting = {key: value for key, value in stats.items() if isinstance(value, (int, float, str))}
    return ", ".join(f"{key} {value}" for key, value in interesting.items())
