"""``metaembed serve``: the search API and web page over an index, with the model loaded once."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._errors import CommandError, index_model, load_model, open_index


def serve(
    index: Path = typer.Option(..., "--index", "-i", help="An index folder written by `metaembed index`."),
    model: str = typer.Option(None, "--model", "-m", help="The MetaEmbed model folder or hub id (default: the one the "
                              "index was built with, which it records and this command prints)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    api_key: str = typer.Option(None, envvar="METAEMBED_API_KEY", help="Require this X-API-Key on write endpoints."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted image upload, in MiB."),
    max_body_mb: float = typer.Option(None, help="Largest request body on any route, in MiB (default: the upload "
                                                 "limit + 1); checked from Content-Length and while reading."),
    max_query_chars: int = typer.Option(10_000, help="Longest query text; longer ones get 413 before any work."),
    max_image_pixels: int = typer.Option(50_000_000, help="Most pixels an image may declare in its header "
                                                          "(width x height) before it is decoded."),
    media_dir: Path = typer.Option(None, help="Where uploaded images are kept (default: INDEX/media)."),
    threads: int = typer.Option(None, "--threads", help="Threads a search uses, each on its own blocks of documents "
                                "(default: torch's thread count)."),
    image_root: list[Path] = typer.Option(None, help="Folders whose images may be served as thumbnails (repeatable)."),
) -> None:
    """Serve search (text and/or image, any budget), add, delete, health and stats, and a web page at /."""
    import uvicorn

    from metaembed.serve import SearchService, ServiceSettings, create_app

    opened = open_index(index, mode="a", threads=threads)  # first: a missing or locked index fails before the model loads
    try:
        model_path, recorded = index_model(model, opened, index)
        settings = ServiceSettings(
            api_key=api_key,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_body_bytes=None if max_body_mb is None else int(max_body_mb * 1024 * 1024),
            max_query_chars=max_query_chars,
            max_image_pixels=max_image_pixels,
            media_dir=media_dir or index / "media",
            allowed_image_roots=list(image_root or []),
            budgets=trained_budgets(model_path),
        )
        loaded_model = load_model(model_path)
    except BaseException:
        opened.close()
        raise
    if settings.budgets is None and loaded_model.training_record is not None:  # a hub id: its config came with it
        settings.budgets = sorted(set(loaded_model.training_record.groups))
    loaded_model.max_image_pixels = max_image_pixels
    settings.allowed_image_roots.extend(_corpus_roots(opened))
    app = create_app(SearchService(loaded_model, opened, settings, model_name=model_path))
    typer.echo(f"index {index}: {len(opened)} items; model {model_path}{' (the one the index was built with)' if recorded else ''}")
    typer.echo(f"Serving on http://{host}:{port}/  (API docs: http://{host}:{port}/docs; the model and budgets: /stats)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def trained_budgets(model: str) -> list | None:
    """The MMR groups a local model folder was trained with, from its own config (``metaembed_config.json``); for
    checkpoints saved before the config held them, from the ``train_config.yaml`` that ``metaembed train`` wrote
    next to them. None when neither says (the paper's budgets are offered)."""
    from metaembed.budgets import Budget
    from metaembed.model.saved_config import METAEMBED_CONFIG_FILE, module_folder, read_training_record

    folder = module_folder(model)
    if folder is not None:
        try:
            record = read_training_record(folder / METAEMBED_CONFIG_FILE)
        except ValueError as error:
            raise CommandError(str(error), "--model") from None
        if record is not None:
            return sorted(set(record.groups))
    config = Path(model) / "train_config.yaml"
    if not config.is_file():
        return None
    import yaml

    try:
        groups = (yaml.safe_load(config.read_text()) or {}).get("groups")
        return sorted({Budget.parse(group) for group in groups}) if groups else None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as error:
        raise CommandError(f"{config}: cannot read its budget groups: {error}", "--model") from None


def _corpus_roots(index) -> list[Path]:
    """The folder of the corpus the index was built from (recorded by `metaembed index`): its images may be shown."""
    corpus = index.properties.get("corpus")
    if not corpus:
        return []
    corpus = Path(corpus)
    return [corpus if corpus.is_dir() else corpus.parent]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
