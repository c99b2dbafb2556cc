"""``metaembed eval``: quality and cost of a MetaEmbed model at every budget, on BEIR, MMEB or ViDoRe data,
next to the model's own backbone as a plain single-vector model (``--no-baseline`` to leave it out)."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

try:  # typer >= 0.2x ships its own click: its usage errors are the ones it formats
    from typer._click.exceptions import NoSuchOption
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import NoSuchOption

from metaembed.budgets import PAPER_BUDGETS, Budget, split_budget_list
from metaembed.cli._errors import CommandError, load_model
from metaembed.cli._flags import command_class

DEFAULT_BUDGETS = " ".join(f"{q},{c}" for q, c in PAPER_BUDGETS)
RENAMED_FLAGS = {"--budgets": "--budget"}
"""Old spellings (documented before the flags were made alike) that still work, hidden and deprecated."""


def parse_budget_arguments(values: list[str]) -> list[Budget]:
    """Budgets from ``--budget 1,1 2,4``, ``--budget "1,1 2,4"`` or repeated ``--budget``; a clear error otherwise."""
    budgets = []
    for value in values:
        for part in split_budget_list(value):
            try:
                budgets.append(Budget.parse(part))
            except ValueError as error:
                raise CommandError(str(error), "--budget") from None
    return budgets


def refuse_unknown_arguments(context: typer.Context, extra: list[str]) -> None:
    """Extra arguments may only be budgets (``--budget 1,1 2,4``); a misspelt option gets click's own
    "No such option ... Did you mean ...?" (this command takes unknown options in, to collect the budgets)."""
    for argument in extra:
        if _looks_like_budget(argument):
            continue
        if argument.startswith("-"):
            names = [name for param in context.command.params for name in (*param.opts, *param.secondary_opts)]
            option = argument.split("=", 1)[0]
            raise NoSuchOption(option, possibilities=difflib.get_close_matches(option, names, n=1, cutoff=0.6), ctx=context)
        raise CommandError(f"unexpected argument {argument!r} (budgets look like 4,8)", "--budget")


def eval_command(
    context: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="A saved MetaEmbed model folder (or hub id)."),
    data: Path = typer.Option(..., "--data", "-d", help="A BEIR folder, an MMEB subset folder or root, a ViDoRe dataset, or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Where results.json, results.md, budget_curve.png, per_query.jsonl and runs/ go."),
    format: str = typer.Option(None, "--format", "-f", help="beir, mmeb or vidore (detected when not given)."),
    budgets: list[str] = typer.Option(None, "--budget", "-b", help="Budgets r_q,r_c: several after one flag (--budget 1,1 2,4) "
                                      f"or the flag repeated. Default: {DEFAULT_BUDGETS}, clipped to the model."),
    split: str = typer.Option(None, "--split", help="The qrels split (default: test)."),
    images: Path = typer.Option(None, "--images", help="The unpacked image folder of MMEB-eval."),
    subset: list[str] = typer.Option(None, "--subset", help="Evaluate only these datasets/subsets under --data (repeatable)."),
    batch_size: int = typer.Option(32, help="Encoding batch size."),
    cache_dir: Path = typer.Option(None, help="Encoding cache (default: $METAEMBED_CACHE/encodings or ~/.cache/metaembed/encodings)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode again and do not store encodings."),
    score_dtype: str = typer.Option("float32", help="MaxSim compute dtype: float32 (exact ranking) or bfloat16 (faster)."),
    baseline: list[str] = typer.Option(None, "--baseline", help="Also score this single-vector sentence-transformers model (folder or hub id; "
                                       "a plain backbone gets mean pooling) beside the budgets, with paired intervals (repeatable)."),
    frozen_towers: Path = typer.Option(None, "--frozen-towers", help="Also score the frozen-towers yardstick of a composed "
                                       "vision-language model (its two pretrained towers, one ridge map fitted on this training JSONL's "
                                       "image-caption pairs) on every task, image tasks included."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Do not score the model's own backbone (scored by default when it loads)."),
    latency_repeats: int = typer.Option(3, "--latency-repeats", help="Timed passes for the latency median and p90, searched through a bf16 index of the documents in the temporary folder ($TMPDIR; as large as their vectors at the largest budget asked); 0: no latency."),
) -> None:
    """Encode the data once at the model's full budget, then report quality and cost at every budget, next to the
    model's own backbone used as a plain single-vector model."""
    import torch

    from metaembed.data.beir import DataFormatError
    from metaembed.evaluation.baselines import BACKBONE, BaselineError
    from metaembed.evaluation.cache import EncodingCache
    from metaembed.evaluation.frozen_towers import FROZEN_TOWERS
    from metaembed.evaluation.report import terminal_table
    from metaembed.evaluation.run import evaluate
    from metaembed.evaluation.sweep import SweepSettings, check_budget_limits, check_budgets
    from metaembed.model.saved_config import read_saved_model_info

    # `--budget 1,1 2,4`: the values after the first land in the extra arguments; take those that are budgets.
    extra = list(context.args)
    refuse_unknown_arguments(context, extra)
    chosen = parse_budget_arguments([*(budgets or []), *extra]) if (budgets or extra) else None
    if score_dtype not in ("float32", "bfloat16"):
        raise CommandError("use float32 or bfloat16", "--score-dtype")
    if latency_repeats < 0:
        raise CommandError(f"must be 0 (no latency) or more, got {latency_repeats}", "--latency-repeats")
    if not data.exists():
        raise CommandError(f"no such file or folder: {data}", "--data")
    saved = read_saved_model_info(model)
    try:
        if saved is not None and chosen:  # refused from the saved config, before gigabytes of weights load
            check_budget_limits(chosen, Budget(saved.num_query_meta_tokens, saved.num_document_meta_tokens), model)
        loaded = load_model(model)
        if chosen:
            chosen = check_budgets(chosen, loaded, model)
    except ValueError as error:
        raise CommandError(str(error), "--budget") from None
    baselines = {} if no_baseline else {BACKBONE: BACKBONE}
    baselines.update({name: name for name in baseline or []})
    if frozen_towers is not None:
        baselines[FROZEN_TOWERS] = _fitted_frozen_towers(loaded, frozen_towers)
    settings = SweepSettings(batch_size=batch_size, cache_dir=cache_dir, use_cache=not no_cache,
                             score_dtype=getattr(torch, score_dtype), latency_repeats=latency_repeats)
    try:
        results = evaluate(loaded, data, chosen, out, format=format, split=split, image_root=images,
                           subsets=subset or None, settings=settings, model_name=model, baselines=baselines)
    except BaselineError as error:
        raise CommandError(str(error), "--baseline") from None
    except DataFormatError as error:
        raise CommandError(str(error), "--data") from None
    typer.echo(terminal_table(results))
    skipped = results["skipped"]["counts"]
    if skipped:
        typer.echo(f"skipped (see results.json): {skipped}")
    if no_cache:
        typer.echo("encoding cache: not used (--no-cache)")
    else:
        cache = EncodingCache(cache_dir).summary()
        typer.echo(f"encoding cache: {cache['path']} ({cache['entries']} entries, {cache['bytes'] / 2**20:.1f} MiB; "
                   "see `metaembed cache`)")
    typer.echo(f"wrote results.json, results.md, budget_curve.png, per_query.jsonl and runs/ (TREC) to {out}")


def _fitted_frozen_towers(model, train_jsonl: Path):
    """The model's frozen towers fitted on ``train_jsonl``, or a usage error naming ``--frozen-towers``."""
    from metaembed.evaluation.frozen_towers import FrozenTowers

    if not train_jsonl.is_file():
        raise CommandError(f"no such file: {train_jsonl}", "--frozen-towers")
    try:
        towers = FrozenTowers.of_model(model).fit_pairs_file(train_jsonl, progress=True)
    except (ValueError, OSError) as error:  # a bad row, a model without towers, a tower folder gone
        raise CommandError(str(error), "--frozen-towers") from None
    typer.echo(f"yardstick: {towers.describe()}")
    return towers


def _looks_like_budget(value: str) -> bool:
    try:
        Budget.parse(value)
        return True
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    app.command("eval", cls=command_class(RENAMED_FLAGS),
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(eval_command)
