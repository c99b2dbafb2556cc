"""Run MetaEmbed models in MTEB (v2), the peer harness with the ViDoRe v1/v2/v3 tasks and late interaction.

- :class:`MetaEmbedMTEBEncoder` implements MTEB's encoder and search protocols for a MetaEmbed model at
  one budget (r_q, r_c): it builds on MTEB's own ``MultiVectorWrapper`` (the wrapper for
  sentence-transformers ``MultiVectorEncoder`` models, which MetaEmbed is) and scores with :func:`metaembed.maxsim`.
- :func:`evaluate_budgets` runs MTEB at every budget. Encoders made together (:meth:`MetaEmbedMTEBEncoder.for_budgets`)
  share one :class:`SharedEncodings`: each corpus and query set is encoded once, at the largest budget, and every
  budget scores prefixes of those vectors, as ``metaembed eval`` does.
- :func:`local_retrieval_task` makes an MTEB retrieval task from local data (any folder ``metaembed eval``
  reads: BEIR, ViDoRe), since MTEB's own tasks fetch from the Hugging Face hub.

Same numbers as ``metaembed eval``: a full-corpus search encodes through eval's own path
(:func:`~metaembed.evaluation.encoding.encode_items`, with its progress bar and, by default, its on-disk cache),
stores vectors in ``SweepSettings.storage_dtype`` (bf16 by default, as eval caches them), scores them in
``score_dtype`` (fp32) with eval's :func:`~metaembed.evaluation.retrieval.search`, and ranks equal scores by document
id, descending (:func:`metaembed.scoring.tie_order`, trec_eval's rule, which MTEB's metrics use too). Pass the same
:class:`~metaembed.evaluation.SweepSettings` to both (or neither) and they agree. Reranking tasks (MTEB's
``top_ranked``) go through MTEB's own path, encoding the candidates at the budget.

Usage (no network needed for a local task)::

    import mteb
    from metaembed.evaluation.mteb_adapter import MetaEmbedMTEBEncoder, evaluate_budgets, local_retrieval_task

    task = local_retrieval_task("path/to/beir-folder")          # or a ViDoRe copy
    results = evaluate_budgets("path/to/metaembed-model", task, ["1,1", "4,8", "16,64"], cache=None)
    print({budget: r.task_results[0].get_score() for budget, r in results.items()})  # nDCG@10 per budget

    encoder = MetaEmbedMTEBEncoder("path/to/metaembed-model", budget="4,8")   # one budget
    result = mteb.evaluate(encoder, task, cache=None)

With the network, MTEB's own tasks work too: ``mteb.evaluate(encoder, mteb.get_tasks(["Vidore2ESGReportsRetrieval"]))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metaembed.budgets import Budget, check_vector_budget
from metaembed.data.detect import load_tasks
from metaembed.data.item import Item
from metaembed.data.tasks import RetrievalTask
from metaembed.evaluation.cache import CachedEncoding, EncodingCache
from metaembed.evaluation.encoding import DOCUMENT, QUERY, encode_items
from metaembed.evaluation.retrieval import search as search_vectors
from metaembed.evaluation.sweep import SweepSettings, check_budgets
from metaembed.scoring import maxsim, tie_order

try:
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.models.sentence_transformer_wrapper import MultiVectorWrapper
except ImportError as error:  # pragma: no cover - exercised only without mteb
    raise ImportError("the MTEB adapter needs mteb v2: pip install 'mteb>=2'") from error


class SharedEncodings:
    """Each side of each MTEB split, encoded once and kept at the largest budget of the encoders sharing it."""

    def __init__(self, model: Any, settings: SweepSettings | None = None) -> None:
        self.model = model
        self.settings = settings if settings is not None else SweepSettings()
        self.cache = EncodingCache(self.settings.cache_dir) if self.settings.use_cache else None
        self.largest = Budget(1, 1)
        self._entries: dict[tuple[str, ...], CachedEncoding] = {}

    def register(self, budget: Budget) -> None:
        """Keep vectors wide enough for ``budget`` too (register before searching, or a side is encoded again)."""
        self.largest = Budget(max(self.largest.query, budget.query), max(self.largest.document, budget.document))

    def clear(self) -> None:
        """Drop every kept encoding (the on-disk cache, if any, keeps its copy)."""
        self._entries.clear()

    def vectors(self, side: str, dataset: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
                batch_size: int, num_proc: int | None, progress: bool) -> CachedEncoding:
        """One side's vectors at the largest budget, documents in tie order: encoded on first use, then kept."""
        ids = [str(i) for i in dataset["id"]]
        width = self.largest.query if side == QUERY else self.largest.document
        key = (side, str(task_metadata.name), str(hf_subset), str(hf_split), _digest(ids))
        kept = self._entries.get(key)
        if kept is not None and (not kept.ids or kept.vectors.shape[1] >= width):
            return kept
        items = _dataset_items(dataset, side, task_metadata, batch_size, num_proc)
        encoded, _ = encode_items(self.model, side, ids, items, batch_size=batch_size, cache=self.cache,
                                  storage_dtype=self.settings.storage_dtype, where=str(task_metadata.name),
                                  progress=progress)
        order = tie_order(encoded.ids) if side == DOCUMENT else list(range(len(encoded.ids)))
        vectors = encoded.vectors[order, :width].contiguous() if encoded.ids else encoded.vectors
        kept = CachedEncoding(vectors, [encoded.ids[i] for i in order], encoded.failed)
        self._entries[key] = kept
        return kept


class MetaEmbedMTEBEncoder(MultiVectorWrapper):
    """MTEB encoder for a MetaEmbed model at a fixed budget (r_q query vectors, r_c document vectors)."""

    def __init__(self, model: Any, budget: Budget | str | tuple[int, int] = "16,64", *, name: str | None = None,
                 settings: SweepSettings | None = None, encodings: SharedEncodings | None = None, **kwargs: Any) -> None:
        model, model_name = _load(model, name)
        self.budget = Budget.parse(budget)
        check_vector_budget(self.budget.query, model.num_query_meta_tokens, "query")
        check_vector_budget(self.budget.document, model.num_document_meta_tokens, "document")
        self.encodings = encodings if encodings is not None else SharedEncodings(model, settings)
        self.encodings.register(self.budget)
        super().__init__(model, **kwargs)
        owner, _, base = model_name.strip("/").rpartition("/")
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites=dict(
                name=f"{Path(owner).name or 'local'}/{base}-budget-{self.budget.query}x{self.budget.document}",
                revision="local",
                loader=None,
                model_type=["late-interaction"],
                similarity_fn_name=ScoringFunction.MAX_SIM,
                modalities=["text", "image"] if getattr(model, "accepts_images", False) else ["text"],
            )
        )

    @classmethod
    def for_budgets(cls, model: Any, budgets: Sequence[Budget | str | tuple[int, int]], *, name: str | None = None,
                    settings: SweepSettings | None = None, **kwargs: Any) -> list["MetaEmbedMTEBEncoder"]:
        """One encoder per budget, sharing one :class:`SharedEncodings`: every corpus is encoded once for all."""
        model, model_name = _load(model, name)
        parsed = check_budgets(budgets, model, model_name)
        shared = SharedEncodings(model, settings)
        for budget in parsed:
            shared.register(budget)
        return [cls(model, budget, name=model_name, encodings=shared, **kwargs) for budget in parsed]

    def search(self, queries: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, top_k: int,
               encode_kwargs: dict[str, Any], top_ranked: Any = None, num_proc: int | None = None,
               timer: Any = None, **kwargs: Any) -> dict[str, dict[str, float]]:
        """Full-corpus MaxSim search at this budget over the shared full-width vectors; ties by document id."""
        if top_ranked is not None:
            return super().search(queries, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                                  top_k=top_k, encode_kwargs=encode_kwargs, top_ranked=top_ranked, num_proc=num_proc,
                                  timer=timer, **kwargs)
        if self.task_corpus is None:
            raise ValueError("Corpus must be indexed before searching.")
        corpus, self.task_corpus = self.task_corpus, None
        settings = self.encodings.settings
        progress = settings.progress and bool(encode_kwargs.get("show_progress_bar", True))
        where = dict(task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                     batch_size=int(encode_kwargs.get("batch_size", settings.batch_size)), num_proc=num_proc, progress=progress)
        phase = timer("Searching corpus", split=hf_split, subset=hf_subset) if timer is not None else contextlib.nullcontext()
        with phase:
            documents = self.encodings.vectors(DOCUMENT, corpus, **where)
            encoded = self.encodings.vectors(QUERY, queries, **where)
            results: dict[str, dict[str, float]] = {str(q): {} for q in queries["id"]}
            if not documents.ids or not encoded.ids:
                return results
            chunks = -(-len(encoded.ids) // settings.query_chunk)
            with tqdm(total=chunks, desc=f"scoring ({self.budget})", unit="chunk", disable=not progress) as bar:
                values, columns = search_vectors(encoded.vectors, documents.vectors, self.budget, top_k, settings, bar.update)
        for query_id, row_values, row_columns in zip(encoded.ids, values.tolist(), columns.tolist()):
            results[query_id] = {documents.ids[c]: v for v, c in zip(row_values, row_columns)}
        return results

    def _encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        """One (r, D) tensor per input: r = r_q for queries, r_c for documents (MTEB's reranking and other paths)."""
        from mteb.types import PromptType

        is_query = prompt_type == PromptType.query
        encode = self.model.encode_query if is_query else self.model.encode_document
        budget = self.budget.query if is_query else self.budget.document
        batch_size = kwargs.get("batch_size", 32)
        vectors: list[torch.Tensor] = []
        for batch in inputs:
            items = _batch_items(batch)
            encoded = encode(items, budget=budget, batch_size=batch_size, show_progress_bar=False)
            vectors.extend(row.float().cpu() for row in encoded)
        return vectors

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """MaxSim with :func:`metaembed.maxsim` (fixed-size vectors, so the lists stack into tensors)."""
        return maxsim(_stack(embeddings1), _stack(embeddings2))


def evaluate_budgets(model: Any, tasks: Any, budgets: Sequence[Budget | str | tuple[int, int]], *,
                     settings: SweepSettings | None = None, name: str | None = None, **evaluate_kwargs: Any) -> dict[str, Any]:
    """``mteb.evaluate`` at every budget, each corpus encoded once: {budget: MTEB's result for it}.

    ``evaluate_kwargs`` go to ``mteb.evaluate`` (e.g. ``cache=None``); its progress bar follows ``settings.progress``."""
    import mteb

    settings = settings if settings is not None else SweepSettings()
    encoders = MetaEmbedMTEBEncoder.for_budgets(model, budgets, name=name, settings=settings)
    evaluate_kwargs.setdefault("show_progress_bar", settings.progress)
    try:
        return {str(encoder.budget): mteb.evaluate(encoder, tasks, **evaluate_kwargs) for encoder in encoders}
    finally:
        encoders[0].encodings.clear()


def _load(model: Any, name: str | None) -> tuple[Any, str]:
    """The model (loaded when given as a path or hub id) and the name its MTEB results carry."""
    if isinstance(model, (str, Path)):
        from metaembed.model import MetaEmbed

        return MetaEmbed.from_pretrained(str(model)), name or str(model)
    return model, name or "local/metaembed"


def _digest(ids: Sequence[str]) -> str:
    """A short digest of an ordered id list: which corpus or query set an encoding belongs to."""
    return hashlib.blake2b("\x00".join(ids).encode("utf-8"), digest_size=16).hexdigest()


def _dataset_items(dataset: Any, side: str, task_metadata: Any, batch_size: int, num_proc: int | None) -> list[Item]:
    """The items of an MTEB split as its own ``create_dataloader`` (the one its wrappers use) presents them, as Items."""
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    prompt_type = PromptType.query if side == QUERY else PromptType.document
    loader = create_dataloader(dataset, task_metadata=task_metadata, prompt_type=prompt_type, batch_size=batch_size, num_proc=num_proc)
    return [_eval_item(item) for batch in loader for item in _batch_items(batch)]


def _eval_item(item: Any) -> Item:
    """An Item from a MetaEmbed item; a PIL image becomes PNG bytes, so the encoding cache can fingerprint it."""
    if isinstance(item, dict):
        text, image = item.get("text"), item.get("image")
    elif isinstance(item, str):
        text, image = item, None
    else:
        text, image = None, item
    if image is not None and not isinstance(image, (bytes, str, Path)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = buffer.getvalue()
    return Item(text=text if text is not None else ("" if image is None else None), image=image)


def _stack(embeddings: Any) -> torch.Tensor:
    if isinstance(embeddings, torch.Tensor):
        return embeddings if embeddings.ndim == 3 else embeddings.unsqueeze(0)
    return torch.stack([torch.as_tensor(e) for e in embeddings])


def _batch_items(batch: dict[str, Any]) -> list[Any]:
    """MTEB batches are column dicts (``text``, ``title``, ``image``); turn them into MetaEmbed items."""
    texts = batch.get("text")
    images = batch.get("image")
    size = len(texts if texts is not None else images)
    items: list[Any] = []
    for index in range(size):
        text = texts[index] if texts is not None else None
        image = images[index] if images is not None else None
        if image is None:
            items.append(text)
        elif not text:
            items.append(image)
        else:
            items.append({"text": text, "image": image})
    return items


def local_retrieval_task(data: str | Path | RetrievalTask, *, split: str | None = None, name: str | None = None, main_score: str | None = None) -> Any:
    """An MTEB ``AbsTaskRetrieval`` over local data: a folder ``metaembed eval`` reads (BEIR or ViDoRe), or a
    :class:`RetrievalTask`. Text corpora and image corpora (ViDoRe pages) are supported."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from PIL import Image

    if isinstance(data, RetrievalTask):
        task = data
    else:
        _, tasks = load_tasks(data, split=split)
        retrieval = [t for t in tasks if isinstance(t, RetrievalTask)]
        if len(retrieval) != 1:
            raise ValueError(f"{data}: local_retrieval_task takes one retrieval dataset, found {len(tasks)} task(s)")
        task = retrieval[0]
    has_images = any(item.image is not None for item in task.corpus.values())

    def image_of(source: Any) -> Image.Image:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source).convert("RGB")

    corpus_rows = [
        {"id": doc_id, "image": image_of(item.image)} if has_images else {"id": doc_id, "text": item.text or "", "title": ""}
        for doc_id, item in task.corpus.items()
    ]
    query_rows = [{"id": query_id, "text": task.queries[query_id].text or ""} for query_id in task.qrels]
    task_name = name or f"MetaEmbedLocal-{task.name}"
    score = main_score or task.headline.replace("@", "_at_").replace("p_at_", "precision_at_")

    metadata = TaskMetadata(
        name=task_name,
        description=f"Local retrieval data from {task.source}, read by metaembed.",
        reference=None,
        dataset={"path": f"local/{task.name}", "revision": "local"},
        type="DocumentUnderstanding" if has_images else "Retrieval",
        category="t2i" if has_images else "t2t",
        modalities=["text", "image"] if has_images else ["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score=score,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )
    qrels = {q: dict(d) for q, d in task.qrels.items()}

    class LocalRetrievalTask(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_list(corpus_rows),
                "queries": Dataset.from_list(query_rows),
                "relevant_docs": qrels,
                "top_ranked": None,
            }}}
            self.data_loaded = True

    LocalRetrievalTask.metadata = metadata
    LocalRetrievalTask.__name__ = task_name.replace("-", "_")
    return LocalRetrievalTask()
