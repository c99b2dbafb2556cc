"""Build real image-text retrieval sets from Debian packages: :func:`build_image_text_sets`.

Sources (each a Debian package, fetched with ``apt-get download`` + ``dpkg-deb -x``, no root needed):
- ``openclipart``: the Open Clip Art drawings of ``openclipart-svg`` with captions from their SVG metadata
  (:mod:`metaembed.data.clipart`);
- ``icons``: application icons of ``papirus-icon-theme`` and ``breeze-icon-theme`` named like a Debian
  package, captioned with that package's description (:mod:`metaembed.data.icons`).

Steps: read captions (cheap), deduplicate them, group items into families and keep whole families, in a
seeded order, up to ``max_images``; render only those (:mod:`metaembed.data.images`, cached, in parallel,
with a progress bar); drop exact pixel duplicates and link near-duplicates (content thumbnails correlating
at least ``near_duplicate_correlation``) into one family; split and write (:mod:`metaembed.data.image_text`).

Writing is atomic and idempotent: the set is built in a hidden sibling folder and renamed into place when
complete (``stats.json`` last), so a killed build never leaves a folder that looks finished; a folder whose
``stats.json`` holds the same settings is reused as it is (``force=True`` rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from metaembed.data.clipart import PACKAGE, clipart_items
from metaembed.data.debian_packages import default_cache_dir, unpack_package
from metaembed.data.icons import THEME_APP_FOLDERS, icon_items
from metaembed.data.image_text import (
    TASKS, ImageDataError, ImageTextItem, dedup_by_caption, families, split_families, write_beir_tasks, write_training,
)
from metaembed.data.images import RenderedImage, near_duplicate_pairs, rasterise_many, require_rsvg_convert

SOURCES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "openclipart": {PACKAGE: None},
    "icons": {theme: (folder.as_posix(),) for theme, folder in THEME_APP_FOLDERS.items()},
}
"""Each source's Debian packages, and the folders of each it needs (None: all of it)."""
FORMAT_VERSION = 2
"""Bumped whenever captions, splits or the layout change, so a set built by older code is rebuilt, not reused."""


@dataclass(frozen=True)
class ImageTextPaths:
    """Where :func:`build_image_text_sets` wrote the set."""

    root: Path
    beir: Path
    """A folder of BEIR task folders: ``metaembed eval`` reads all of them."""
    tasks: dict[str, Path]
    train_jsonl: Path
    dev_jsonl: Path
    stats: Path
    reused: bool


def _paths(root: Path, reused: bool) -> ImageTextPaths:
    return ImageTextPaths(root, root / "beir", {task: root / "beir" / task for task in TASKS}, root / "train.jsonl",
                          root / "dev.jsonl", root / "stats.json", reused)


def collect_items(sources: tuple[str, ...], package_roots: dict[str, Path], lists_dir: Path | None,
                  progress: bool = False) -> tuple[list[ImageTextItem], dict]:
    """Items of every source (captions only, nothing rendered) and per-source counts."""
    items: list[ImageTextItem] = []
    counts: dict[str, dict] = {}
    for source in sources:
        if source == "openclipart":
            found, counted = clipart_items(package_roots[PACKAGE], progress=progress)
        elif source == "icons":
            found, counted = icon_items({name: package_roots[name] for name in SOURCES["icons"]}, lists_dir=lists_dir)
        else:
            raise ValueError(f"unknown image source {source!r}; use {sorted(SOURCES)}")
        items.extend(found)
        counts[source] = dict(sorted(counted.items()))
    return items, counts


def _choose(items: list[ImageTextItem], max_images: int, seed: int) -> list[ImageTextItem]:
    """Whole text families in a seeded order until ``max_images`` items (all when there are fewer)."""
    groups = families(items)
    random.Random(seed).shuffle(groups)
    chosen: list[ImageTextItem] = []
    for group in groups:
        if len(chosen) + len(group) > max_images:
            continue
        chosen.extend(items[index] for index in group)
    return sorted(chosen, key=lambda item: item.key)


def _render(items: list[ImageTextItem], *, max_side: int, cache_dir: Path, workers: int, progress: bool,
            near_duplicate_correlation: float) -> tuple[list[ImageTextItem], list[RenderedImage], dict]:
    """Render, drop failures and exact pixel duplicates, link near-duplicates; returns kept items, their images, counts."""
    program = require_rsvg_convert(cache_dir) if any(item.source.suffix.lower() == ".svg" for item in items) else "rsvg-convert"
    with tqdm(total=len(items), desc="rendering images", unit="img", disable=not progress) as bar:
        results = rasterise_many([item.source for item in items], max_side, cache_dir=cache_dir, workers=workers,
                                 progress=bar.update, rsvg_convert=program)
    counts: Counter = Counter()
    failures: list[str] = []
    kept: list[ImageTextItem] = []
    rendered: list[RenderedImage] = []
    seen: set[str] = set()
    for item, result in zip(items, results):
        if not isinstance(result, RenderedImage):
            counts[{"blank": "blank_image", "timeout": "render_timeout"}.get(result.kind, "render_failed")] += 1
            failures.append(str(result))
            continue
        if result.pixel_sha in seen:
            counts["duplicate_pixels"] += 1
            continue
        seen.add(result.pixel_sha)
        item.image = f"images/{result.pixel_sha[:2]}/{result.pixel_sha[:20]}.png"
        kept.append(item)
        rendered.append(result)
    pairs = near_duplicate_pairs([image.thumb for image in rendered], near_duplicate_correlation)
    for first, second in pairs:
        kept[first].links.append(second)
    linked = {index for pair in pairs for index in pair}
    report = {**dict(counts), "near_duplicate_pairs": len(pairs), "near_duplicate_items": len(linked),
              "failure_examples": failures[:10]}
    return kept, rendered, report


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with the finished ``partial`` folder (two renames; the old set is removed after)."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    partial.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def build_image_text_sets(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sources: tuple[str, ...] = ("openclipart", "icons"),
    max_images: int = 3000,
    num_test: int = 500,
    num_dev: int = 200,
    corpus_size: int = 1200,
    max_side: int = 224,
    near_duplicate_correlation: float = 0.95,
    max_eval_family: int = 8,
    package_roots: dict[str, str | Path] | None = None,
    cache_dir: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> ImageTextPaths:
    """Build the image-text set of ``sources`` in ``out_dir`` (layout in :mod:`metaembed.data.image_text`);
    deterministic per seed. Reuses a complete set built with the same settings unless ``force``.

    ``package_roots`` maps a package name to an already unpacked tree (tests pass small fixture trees);
    others are fetched into ``cache_dir`` (default ``~/.cache/metaembed/debian-packages``), where renders are
    cached too. ``lists_dir``: the apt lists the icon captions come from (default ``/var/lib/apt/lists``).
    """
    settings = {"format": FORMAT_VERSION, "seed": seed, "sources": list(sources), "max_images": max_images,
                "num_test": num_test, "num_dev": num_dev, "corpus_size": corpus_size, "max_side": max_side,
                "near_duplicate_correlation": near_duplicate_correlation, "max_eval_family": max_eval_family}
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"unknown image sources {unknown}; use some of {sorted(SOURCES)}")
    if not force and _complete_with(Path(out_dir), settings):
        return _paths(Path(out_dir), reused=True)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    begin = time.perf_counter()
    roots = {name: Path(path) for name, path in (package_roots or {}).items()}
    packages: dict[str, dict] = {}
    for source in sources:
        for name, members in SOURCES.get(source, {}).items():
            if name not in roots:
                unpacked = unpack_package(name, cache, members)
                roots[name] = unpacked.root
                packages[name] = {"download_s": unpacked.download_s, "unpack_s": unpacked.unpack_s, "reused": unpacked.reused}
    fetch_s = time.perf_counter() - begin
    begin = time.perf_counter()
    items, source_counts = collect_items(tuple(sources), roots, Path(lists_dir) if lists_dir else None, progress)
    return build_from_items(
        out_dir, items, settings=settings, cache_dir=cache, workers=workers, progress=progress,
        extra_stats={"sources": source_counts, "packages": packages},
        timings={"packages": fetch_s, "read_captions": time.perf_counter() - begin},
    )


def _complete_with(out_dir: Path, settings: dict) -> bool:
    """Whether ``out_dir`` holds a finished set (its stats.json, written last) built with ``settings``."""
    try:
        return json.loads((out_dir / "stats.json").read_text(encoding="utf-8")).get("config") == settings
    except (OSError, ValueError):
        return False


def build_from_items(
    out_dir: str | Path, items: list[ImageTextItem], *, settings: dict, cache_dir: str | Path, workers: int | None = None,
    progress: bool = True, extra_stats: dict | None = None, timings: dict[str, float] | None = None,
) -> ImageTextPaths:
    """The source-independent part: deduplicate captions, choose, render, deduplicate pixels, split, write.

    ``settings`` holds seed, max_images, num_test, num_dev, corpus_size, max_side, near_duplicate_correlation and
    max_eval_family (as :func:`build_image_text_sets` takes them); it is stored in stats.json as ``config``.
    The set is written to a hidden sibling folder and renamed to ``out_dir`` only when complete."""
    out_dir = Path(out_dir)
    timings = dict(timings or {})
    begin = time.perf_counter()
    unique, caption_counts = dedup_by_caption(items)
    chosen = _choose(unique, settings["max_images"], settings["seed"])
    timings["choose"] = time.perf_counter() - begin
    begin = time.perf_counter()
    kept, rendered, render_counts = _render(
        chosen, max_side=settings["max_side"], cache_dir=Path(cache_dir), workers=workers or os.cpu_count() or 2,
        progress=progress, near_duplicate_correlation=settings["near_duplicate_correlation"],
    )
    timings["render"] = time.perf_counter() - begin
    begin = time.perf_counter()
    groups = families(kept)
    split = split_families(groups, seed=settings["seed"], num_test=settings["num_test"], num_dev=settings["num_dev"],
                           corpus_size=settings["corpus_size"], max_eval_family=settings["max_eval_family"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for item, image in zip(kept, rendered):
            target = partial / item.image
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image.png)
        tasks = write_beir_tasks(partial, kept, split)
        examples = write_training(partial, kept, split, groups, settings["seed"])
        timings["write"] = time.perf_counter() - begin
        stats = {
            "config": settings, **(extra_stats or {}), "items_read": len(items), **caption_counts,
            "chosen_for_rendering": len(chosen), "render": render_counts, "images": len(kept),
            "images_per_source": dict(Counter(item.key.split("/", 1)[0] for item in kept)),
            "with_image_text_query": sum(1 for item in kept if item.query_text), "families": len(groups),
            "largest_family": max(map(len, groups)),
            "split_images": {"train": len(split.train), "dev": len(split.dev), "test": len(split.test),
                             "distractors": len(split.distractors)},
            "tasks": tasks, **examples, "timings_s": {name: round(value, 2) for name, value in timings.items()},
        }
        (partial / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _paths(out_dir, reused=False)


def main(argv: list[str] | None = None) -> None:
    """``python -m metaembed.data.image_sets OUT_DIR``: build the set and print its stats and where it went."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m metaembed.data.image_sets")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", nargs="+", default=["openclipart", "icons"], choices=sorted(SOURCES))
    parser.add_argument("--max-images", type=int, default=3000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--corpus-size", type=int, default=1200)
    parser.add_argument("--max-side", type=int, default=224)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = build_image_text_sets(
            args.out_dir, seed=args.seed, sources=tuple(args.sources), max_images=args.max_images, num_test=args.test,
            num_dev=args.dev, corpus_size=args.corpus_size, max_side=args.max_side, cache_dir=args.cache_dir, force=args.force,
        )
    except (ImageDataError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(json.loads(paths.stats.read_text()), indent=2))
    print(f"{'reused' if paths.reused else 'built'}: {paths.root}\nBEIR tasks: {paths.beir}\ntraining JSONL: {paths.train_jsonl}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
