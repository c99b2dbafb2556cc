"""Building a :class:`MultiVectorIndex` from a corpus: the one way ``metaembed index`` and the quickstart do it.

Documents are encoded in chunks and each chunk is committed on its own, so an interrupted build loses at most one
chunk and a rerun encodes only what is missing. Under ``torchrun`` (``WORLD_SIZE`` > 1) each process encodes its
share and stages its segments; rank 0 then commits every process's segments in one manifest update.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaembed.index.codebook import check_subquantizers, default_subquantizers
from metaembed.index.document_basis import check_basis
from metaembed.index.corpus import CorpusRecord, read_corpus
from metaembed.index.embedded import MultiVectorIndex
from metaembed.index.errors import IndexSettingsError
from metaembed.index.provenance import MODEL_PROPERTY, local_or_as_given, recorded_model
from metaembed.index.merging import AUTO_MERGE_MAX_BYTES
from metaembed.index.segment import STORAGE_DTYPES

if TYPE_CHECKING:
    from metaembed.model import MetaEmbed

STAGING = "staging"
"""The index's folder of segments staged by each rank (``rank-N.jsonl``) and not yet committed."""


@dataclass
class BuiltIndex:
    """What a build did: the index folder, its size and settings, and how much of it this run encoded."""

    path: Path
    model: str | None
    documents: int
    """Documents in the index after the build (counted by rank 0; other ranks report what they saw before)."""
    already_indexed: int
    encoded: int
    """Documents this process encoded."""
    document_budget: int
    dim: int
    dtype: str
    bytes_per_document: float
    rank: int = 0

    def summary(self) -> str:
        """One line: where the index is, its size, its vectors and the model that made them."""
        return (f"index {self.path}: {self.documents} documents, {self.document_budget} vectors of {self.dim} dims "
                f"each, {self.bytes_per_document:.0f} bytes per document; model {self.model}")


def build_index(
    model: MetaEmbed | str | Path,
    corpus: Sequence[CorpusRecord] | str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    document_budget: int | None = None,
    dtype: str = "bfloat16",
    subquantizers: int | None = None,
    full_precision: bool = False,
    basis: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 512,
    corpus_name: str | None = None,
    vectors: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BuiltIndex:
    """Encode the corpus documents not yet in the index at ``out`` (created, or resumed when it exists).

    ``model`` is a MetaEmbed model or its folder / hub id; ``model_name`` is what the index records (default: the
    folder or hub id given; a local folder is recorded as an absolute path). ``corpus`` is a list of records or a
    corpus file or folder (see :func:`metaembed.index.corpus.read_corpus`). ``vectors`` are the records' vectors
    already encoded at the full document budget, in the records' order (nothing is encoded then). ``log`` gets the
    line saying what a resumed build found. ``dtype``, ``subquantizers``, ``full_precision``, ``basis``: the storage,
    as for :meth:`MultiVectorIndex.create` (a pq codebook is trained on the first chunk; ``basis`` None resumes an
    index with the directions it has, or gives a new one the default). A folder holding an index built
    with other settings, a budget over the model's, or an unknown ``dtype`` raises :class:`IndexSettingsError`."""
    if dtype not in STORAGE_DTYPES:
        raise IndexSettingsError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}", "dtype")
    if dtype != "pq" and (subquantizers is not None or full_precision or basis is not None):
        raise IndexSettingsError(f"subquantizers, full precision and basis apply to dtype pq only, not {dtype}", "dtype")
    out = Path(out)
    if not isinstance(corpus, Sequence) or isinstance(corpus, str):
        corpus_name = corpus_name or str(Path(corpus).resolve())
        corpus = read_corpus(corpus)
    if isinstance(model, (str, Path)):
        from metaembed.model import MetaEmbed

        model_name = model_name or str(model)
        model = MetaEmbed.from_pretrained(str(model))
    r_c = document_budget or model.num_document_meta_tokens
    if r_c > model.num_document_meta_tokens:
        raise IndexSettingsError(
            f"{r_c} is more than the model's {model.num_document_meta_tokens} document meta tokens", "document_budget")
    settings = {MODEL_PROPERTY: local_or_as_given(model_name) if model_name else None, "document_budget": r_c,
                "dim": model.embedding_dim, "dtype": dtype}
    if dtype == "pq":
        try:
            settings["pq"] = {"subquantizers": default_subquantizers(model.embedding_dim) if subquantizers is None
                              else check_subquantizers(model.embedding_dim, subquantizers),
                              "full_precision": bool(full_precision)}
        except ValueError as error:
            raise IndexSettingsError(str(error), "subquantizers") from None
        try:
            settings["pq"]["basis"] = None if basis is None else check_basis(basis, r_c)
        except ValueError as error:
            raise IndexSettingsError(str(error), "basis") from None
    properties = {key: value for key, value in settings.items() if value is not None and key != "pq"}
    if corpus_name:
        properties["corpus"] = local_or_as_given(corpus_name)
    records = list(corpus)
    if vectors is not None and len(vectors) != len(records):
        raise ValueError(f"{len(vectors)} vectors given for {len(records)} documents")
    with _Distributed() as dist:
        return _build(model, records, out, settings, properties, dist, vectors=vectors, batch_size=batch_size,
                      chunk_size=chunk_size, progress=progress, log=log or (lambda line: None))


def _build(model: Any, records: list[CorpusRecord], out: Path, settings: dict[str, Any], properties: dict[str, Any],
           dist: _Distributed, *, vectors: Any, batch_size: int, chunk_size: int, progress: bool,
           log: Callable[[str], None]) -> BuiltIndex:
    from tqdm import tqdm

    r_c, staging = settings["document_budget"], out / STAGING
    writer = None
    if dist.rank == 0:
        writer = _open_or_create(out, settings, properties)
        # folders of chunks a killed run wrote but never committed (or staged) are dropped; they are re-encoded
        writer.remove_orphan_segments(keep=[record["name"] for record in _staged_records(staging)])
    try:
        if writer is not None and dist.active and writer.dtype == "pq" and not writer.manifest.get("codebook"):
            # the first add trains the codebook every process encodes with: rank 0 adds its first chunk alone
            done = set(writer.ids) | _staged_ids(staging, out)
            first = [i for i, r in enumerate(records) if i % dist.world == 0 and r.id not in done][:chunk_size]
            _add_chunk(model, records, first, writer, r_c, vectors, batch_size)
        dist.barrier()
        index = writer if writer is not None else MultiVectorIndex.open(out, mode="r", verify=False)
        done = set(index.ids) | _staged_ids(staging, out)
        mine = [i for i, r in enumerate(records) if i % dist.world == dist.rank and r.id not in done]
        if dist.rank == 0 and done:
            log(f"resuming: {len(done)} of {len(records)} documents already indexed")
        bar = tqdm(total=len(mine), desc=f"encoding (rank {dist.rank})" if dist.active else "encoding", unit="doc",
                   disable=not progress or (dist.active and dist.rank != 0), position=dist.rank)
        for start in range(0, len(mine), chunk_size):
            positions = mine[start : start + chunk_size]
            _add_chunk(model, records, positions, index, r_c, vectors, batch_size,
                       staged=staging / f"rank-{dist.rank}.jsonl" if dist.active else None)
            bar.update(len(positions))
        bar.close()
        dist.barrier()
        if writer is not None:
            staged = _staged_records(staging)
            if staged:
                writer.commit_segments(staged)  # every process's segments become visible in one commit
            for file in staging.glob("rank-*.jsonl") if staging.is_dir() else []:
                file.unlink()
            finish_merging(writer)
        return BuiltIndex(out, settings[MODEL_PROPERTY], len(writer if writer is not None else index), len(done),
                          len(mine), r_c, index.dim, index.dtype, index.bytes_per_document(), dist.rank)
    finally:
        if writer is not None:
            writer.close()  # an exception must not leave the lock held in this process


def finish_merging(index: MultiVectorIndex) -> None:
    """At the end of a build, merge its segments into one when the whole index is within what the automatic policy
    merges (AUTO_MERGE_MAX_BYTES: a rewrite of seconds, needing that much free disk); a larger index keeps its
    tiered segments (``metaembed compact`` merges them when wanted)."""
    if index.stored_bytes() <= AUTO_MERGE_MAX_BYTES:
        index.compact()


def _add_chunk(model: Any, records: list[CorpusRecord], positions: list[int], index: MultiVectorIndex, r_c: int,
               vectors: Any, batch_size: int, staged: Path | None = None) -> None:
    """Encode the records at ``positions`` (or take their given ``vectors``) and add them, or stage them into the
    ``staged`` list of a distributed run."""
    if not positions:
        return
    chunk = [records[i] for i in positions]
    if vectors is None:
        encoded = model.encode_document([r.item.to_model_input() for r in chunk], budget=r_c, batch_size=batch_size,
                                        show_progress_bar=False)
    else:
        encoded = vectors[positions, :r_c]
    ids, metadata = [r.id for r in chunk], [r.metadata for r in chunk]
    if staged is not None:
        _append_staged(staged, index.stage(ids, encoded, metadata))
    else:
        index.add(ids, encoded, metadata)


class _Distributed:
    """The torchrun process group: started when ``WORLD_SIZE`` > 1 and none is, ended by whoever started it."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.active = self.world > 1
        self.rank = 0
        self._started = False

    def __enter__(self) -> _Distributed:
        if self.active:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                self._started = True
            self.rank = dist.get_rank()
        return self

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for alone)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self._started:
            import torch.distributed as dist

            if error is None:
                dist.barrier()
            dist.destroy_process_group()


def _open_or_create(out: Path, settings: dict[str, Any], properties: dict[str, Any]) -> MultiVectorIndex:
    """The index at ``out`` for appending, when it was built with ``settings``; a new one when there is none."""
    if not MultiVectorIndex.exists(out):
        pq = settings.get("pq", {})
        return MultiVectorIndex.create(out, settings["dim"], settings["document_budget"], dtype=settings["dtype"],
                                       properties=properties, subquantizers=pq.get("subquantizers"),
                                       full_precision=pq.get("full_precision", False), basis=pq.get("basis"))
    index = MultiVectorIndex.open(out, mode="a")
    recorded = {MODEL_PROPERTY: recorded_model(index.properties, out),  # an older index's relative path, found again
                "document_budget": index.max_document_vectors, "dim": index.dim, "dtype": index.dtype}
    if "pq" in index.manifest:
        pq = index.manifest["pq"]  # the settings a run asks for (how directions are laid out is the index's own)
        recorded["pq"] = {"subquantizers": pq["subquantizers"], "full_precision": pq["full_precision"],
                          "basis": pq.get("basis", 0)}  # indexes written before directions have none
        if "pq" in settings and settings["pq"]["basis"] is None:  # not asked for: resume with the index's
            settings = {**settings, "pq": {**settings["pq"], "basis": recorded["pq"]["basis"]}}
    if settings[MODEL_PROPERTY] is None:  # a model given without a name: its vectors' shape is all there is to check
        recorded[MODEL_PROPERTY] = None
    if recorded != settings:
        index.close()
        raise IndexSettingsError(f"the index at {out} was built with {recorded}, this run asks for {settings}: "
                                 "use another folder or the same settings to resume", "index")
    return index


def _append_staged(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _staged_records(staging: Path) -> list[dict[str, Any]]:
    """Segments written by every rank (this run and interrupted ones), in rank order; a torn last line is skipped."""
    records = []
    for file in sorted(staging.glob("rank-*.jsonl")) if staging.is_dir() else []:
        for line in file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _staged_ids(staging: Path, out: Path) -> set[str]:
    ids: set[str] = set()
    for record in _staged_records(staging):
        ids_file = out / "segments" / record["name"] / "ids.json"
        if ids_file.is_file():
            ids.update(json.loads(ids_file.read_text()))
    return ids
