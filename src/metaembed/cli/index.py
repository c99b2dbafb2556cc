"""``metaembed index``: encode a corpus into a MultiVectorIndex, resumable, sharded under torchrun
(:func:`metaembed.index.build_index` does the work; this module reads the flags and prints)."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._errors import CommandError, load_model

_SETTING_FLAGS = {"index": "--out", "document_budget": "--document-budget", "dtype": "--dtype",
                  "subquantizers": "--subquantizers", "basis": "--basis"}


def index_command(
    model: str = typer.Option(..., "--model", "-m", help="A saved MetaEmbed model folder (or hub id)."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help="JSONL of items (id, text/image), a BEIR corpus.jsonl, or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="The index folder (created, or resumed when it exists)."),
    document_budget: int = typer.Option(None, "--document-budget", help="Vectors stored per document (default: all the model's document meta tokens, 64 for the paper's models)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Encoding batch size."),
    chunk_size: int = typer.Option(512, "--chunk-size", help="Documents per committed segment: an interrupted run loses at most one chunk per process."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Vector storage: bfloat16, float32 (exact fp32 rankings, 2x the bytes), int8 (per-vector scales) or pq (a mean vector and a few directions per document + product-quantized residual codes: 1/8 of bf16 by default; scored on the codes)."),
    subquantizers: int = typer.Option(None, "--subquantizers", help="pq only: code bytes per stored vector (a divisor of the vector size; default size / 8)."),
    full_precision: bool = typer.Option(False, "--full-precision", help="pq only: also keep bf16 copies on disk, so each search rescores its best candidates exactly."),
    basis: int = typer.Option(None, "--basis", help="pq only: int8 directions kept per document before the codes (default 5 at 64 vectors of 384 with 48-byte codes: 1/8 of bf16; 0: none)."),
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths", help="Accept image paths that lead outside the corpus file's folder (refused by default)."),
) -> None:
    """Encode every document of CORPUS and store its first r_c vectors; rerun to resume an interrupted run.
    The index records the model (a local folder as its absolute path), so `metaembed search` finds it from anywhere."""
    from metaembed.index import IndexSettingsError, build_index
    from metaembed.index.corpus import CorpusError, read_corpus
    from metaembed.index.segment import STORAGE_DTYPES

    try:
        records = read_corpus(corpus, allow_outside_paths=allow_outside_paths)
    except CorpusError as error:
        raise CommandError(str(error), "--corpus") from None
    if dtype not in STORAGE_DTYPES:
        raise CommandError(f"use {', '.join(STORAGE_DTYPES[:-1])} or {STORAGE_DTYPES[-1]}, got {dtype!r}", "--dtype")
    if dtype != "pq" and (subquantizers is not None or full_precision or basis is not None):
        raise CommandError(f"--subquantizers, --full-precision and --basis apply to --dtype pq only, not {dtype}", "--dtype")
    loaded = load_model(model)
    try:
        built = build_index(loaded, records, out, model_name=model, document_budget=document_budget, dtype=dtype,
                            subquantizers=subquantizers, full_precision=full_precision, basis=basis, batch_size=batch_size, chunk_size=chunk_size, corpus_name=str(corpus.resolve()),
                            log=typer.echo)
    except IndexSettingsError as error:
        raise CommandError(str(error), _SETTING_FLAGS.get(error.setting)) from None
    if built.rank == 0:
        typer.echo(built.summary())


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
