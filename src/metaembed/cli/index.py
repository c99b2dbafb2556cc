"""``metaembed index``: encode a corpus into a MultiVectorIndex, resumable, sharded under torchrun."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

STAGING = "staging"


def index_command(
    model: str = typer.Option(..., "--model", "-m", help="A saved MetaEmbed model folder (or hub id)."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help="JSONL of items (id, text/image), a BEIR corpus.jsonl, or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="The index folder (created, or resumed when it exists)."),
    document_budget: int = typer.Option(None, "--document-budget", help="Vectors stored per document (default: all the model's document meta tokens, 64 for the paper's models)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Encoding batch size."),
    chunk_size: int = typer.Option(512, "--chunk-size", help="Documents per committed segment: an interrupted run loses at most one chunk per process."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Vector storage: bfloat16 or int8 (per-vector scales)."),
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths", help="Accept image paths that lead outside the corpus file's folder (refused by default)."),
) -> None:
    """Encode every document of CORPUS and store its first r_c vectors; rerun to resume an interrupted run."""
    from metaembed.index.corpus import CorpusError, read_corpus

    try:
        records = read_corpus(corpus, allow_outside_paths=allow_outside_paths)
    except CorpusError as error:
        raise typer.BadParameter(str(error), param_hint="--corpus") from None
    if dtype not in ("bfloat16", "int8"):
        raise typer.BadParameter("use bfloat16 or int8", param_hint="--dtype")
    run_index(model, records, out, document_budget, batch_size, chunk_size, dtype, corpus_name=str(corpus.resolve()))


def run_index(model_path: str, records: list, out: Path, document_budget: int | None, batch_size: int,
              chunk_size: int, dtype: str, corpus_name: str) -> None:
    """Encode the records not yet in the index at ``out``: one commit per chunk alone, one commit in all under torchrun."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from metaembed.index import MultiVectorIndex
    from metaembed.model import MetaEmbed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0

    model = MetaEmbed.from_pretrained(model_path)
    r_c = document_budget or model.num_document_meta_tokens
    if r_c > model.num_document_meta_tokens:
        raise typer.BadParameter(
            f"{r_c} is more than the model's {model.num_document_meta_tokens} document meta tokens",
            param_hint="--document-budget")
    settings = {"model": str(model_path), "document_budget": r_c, "dim": model.embedding_dim, "dtype": dtype}

    writer = None
    if rank == 0:
        writer = _open_or_create(out, settings, corpus_name, MultiVectorIndex)
        # folders of chunks a killed run wrote but never committed (or staged) are dropped; they are re-encoded
        writer.remove_orphan_segments(keep=[record["name"] for record in _staged_records(out / STAGING)])
    try:
        if distributed:
            dist.barrier()
        index = writer if writer is not None else MultiVectorIndex.open(out, mode="r", verify=False)
        staging = out / STAGING
        done = set(index.ids) | _staged_ids(staging, out)
        mine = [r for i, r in enumerate(records) if i % world == rank and r.id not in done]
        if rank == 0 and done:
            typer.echo(f"resuming: {len(done)} of {len(records)} documents already indexed")

        progress = tqdm(total=len(mine), desc=f"encoding (rank {rank})" if distributed else "encoding", unit="doc",
                        disable=rank != 0 and distributed, position=rank)
        for start in range(0, len(mine), chunk_size):
            chunk = mine[start : start + chunk_size]
            vectors = model.encode_document([r.item for r in chunk], budget=r_c, batch_size=batch_size,
                                            show_progress_bar=False)
            ids, metadata = [r.id for r in chunk], [r.metadata for r in chunk]
            if distributed:
                record = index.stage(ids, vectors, metadata)
                _append_staged(staging / f"rank-{rank}.jsonl", record)
            else:
                index.add(ids, vectors, metadata)
            progress.update(len(chunk))
        progress.close()

        if distributed:
            dist.barrier()
        if rank == 0:
            staged = _staged_records(staging)
            if staged:
                writer.commit_segments(staged)  # every process's segments become visible in one commit
            for file in staging.glob("rank-*.jsonl") if staging.is_dir() else []:
                file.unlink()
            typer.echo(f"index {out}: {len(writer)} documents, {r_c} vectors of {writer.dim} dims each, "
                       f"{writer.bytes_per_document():.0f} bytes per document")
    finally:
        if writer is not None:
            writer.close()  # an exception must not leave the lock held in this process
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def _open_or_create(out: Path, settings: dict[str, Any], corpus_name: str, index_class: Any) -> Any:
    if index_class.exists(out):
        index = index_class.open(out, mode="a")
        recorded = {key: index.properties.get(key) for key in settings}
        recorded["dim"], recorded["dtype"] = index.dim, index.dtype
        if recorded != settings:
            index.close()
            raise typer.BadParameter(
                f"the index at {out} was built with {recorded}, this run asks for {settings}: "
                "use another --out or the same settings to resume", param_hint="--out")
        return index
    return index_class.create(out, settings["dim"], settings["document_budget"], dtype=settings["dtype"],
                              properties={**settings, "corpus": corpus_name})


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


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
