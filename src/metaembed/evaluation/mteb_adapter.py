"""Run MetaEmbed models in MTEB (v2), the peer harness with the ViDoRe v1/v2/v3 tasks and late interaction.

- :class:`MetaEmbedMTEBEncoder` implements MTEB's encoder and search protocols for a MetaEmbed model at
  one budget (r_q, r_c): it builds on MTEB's own ``MultiVectorWrapper`` (the wrapper for
  sentence-transformers ``MultiVectorEncoder`` models, which MetaEmbed is), encodes each side with
  ``encode_query(budget=r_q)`` / ``encode_document(budget=r_c)``, and scores with :func:`metaembed.maxsim`.
- :func:`local_retrieval_task` makes an MTEB retrieval task from local data (any folder ``metaembed eval``
  reads: BEIR, ViDoRe), since MTEB's own tasks fetch from the Hugging Face hub.

Ties: MTEB ranks equal scores by document id, descending (pytrec_eval's rule), which is the rule of
``metaembed eval`` and of the index's search too (:mod:`metaembed.scoring`), so the three rank a tie alike.

Usage (no network needed for a local task)::

    import mteb
    from metaembed.evaluation.mteb_adapter import MetaEmbedMTEBEncoder, local_retrieval_task

    encoder = MetaEmbedMTEBEncoder("path/to/metaembed-model", budget="4,8")
    task = local_retrieval_task("path/to/beir-folder")          # or a ViDoRe copy
    result = mteb.evaluate(encoder, task, cache=None)
    print(result.task_results[0].get_score())                   # the task's main score (nDCG@10)

With the network, MTEB's own tasks work too: ``mteb.evaluate(encoder, mteb.get_tasks(["Vidore2ESGReportsRetrieval"]))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaembed.budgets import Budget, check_vector_budget
from metaembed.data.detect import load_tasks
from metaembed.data.tasks import RetrievalTask
from metaembed.scoring import maxsim

try:
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.models.sentence_transformer_wrapper import MultiVectorWrapper
except ImportError as error:  # pragma: no cover - exercised only without mteb
    raise ImportError("the MTEB adapter needs mteb v2: pip install 'mteb>=2'") from error


class MetaEmbedMTEBEncoder(MultiVectorWrapper):
    """MTEB encoder for a MetaEmbed model at a fixed budget (r_q query vectors, r_c document vectors)."""

    def __init__(self, model: Any, budget: Budget | str | tuple[int, int] = "16,64", *, name: str | None = None, **kwargs: Any) -> None:
        if isinstance(model, (str, Path)):
            from metaembed.model import MetaEmbed

            model_name = name or str(model)
            model = MetaEmbed.from_pretrained(str(model))
        else:
            model_name = name or "local/metaembed"
        self.budget = Budget.parse(budget)
        check_vector_budget(self.budget.query, model.num_query_meta_tokens, "query")
        check_vector_budget(self.budget.document, model.num_document_meta_tokens, "document")
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

    def _encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        """One (r, D) tensor per input: r = r_q for queries, r_c for documents (and untyped inputs)."""
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
    import io

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
