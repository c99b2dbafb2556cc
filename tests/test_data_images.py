"""The image-text set builder (metaembed.data.image_sets and its parts), on small fixture trees written here with
Pillow and as SVG text: split hygiene, deduplication by pixels and caption, files readable by the repo's own
BEIR and training readers, bad files counted instead of crashing, atomic and idempotent writing. The real
8k-image package is used only by the one slow test, when it is already unpacked."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from metaembed.data.clipart import clean_title, read_svg_metadata, stem_caption
from metaembed.data.debian_packages import default_cache_dir, unpack_package
from metaembed.data.detect import load_tasks
from metaembed.data.icons import mask_name
from metaembed.data.image_sets import build_from_items, build_image_text_sets
from metaembed.data.image_text import ImageTextItem, normalise_text
from metaembed.data.images import content_thumbnail, near_duplicate_pairs
from metaembed.training.data import read_jsonl

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert missing: apt-get install librsvg2-bin")


def grid_image(seed: int, side: int = 64) -> Image.Image:
    """A 4x4 grid of random colours: distinct seeds give images that are not near-duplicates."""
    rng = random.Random(seed)
    image = Image.new("RGB", (4, 4))
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(16)])
    return image.resize((side, side), Image.Resampling.NEAREST)


def png_items(root: Path) -> list[ImageTextItem]:
    """40 good items in pairs sharing a family key, plus one of each kind of problem."""
    root.mkdir(parents=True)
    items = []

    def add(name: str, image: Image.Image | bytes, caption: str, n: int, query: str | None = None) -> None:
        path = root / f"{name}.png"
        if isinstance(image, bytes):
            path.write_bytes(image)
        else:
            image.save(path)
        items.append(ImageTextItem(
            key=f"fixture/{name}", source=path, caption=caption, doc_text=f"{caption} (group {n % 4})",
            query_text=query, category=f"group{n % 4}/sub", family_keys=(f"stem:{n // 2}",),
        ))

    for n in range(40):
        add(f"item{n:02d}", grid_image(n), f"item {n} {WORDS[n % 16]}", n, f"a picture about {WORDS[(n + 3) % 16]} number {n}")
    add("copy-of-0", grid_image(0), "another caption for a copy", 100)  # same pixels as item00
    shifted = Image.new("RGB", (70, 70), "white")
    shifted.paste(grid_image(1), (3, 3))
    add("near-1", shifted, "shifted copy of one", 101)  # item01 with a white margin: near-duplicate
    add("same-caption", grid_image(500), "item 2 charlie", 102)  # caption of item02
    add("corrupt", b"this is not a png at all", "corrupt file here", 103)
    good = (root / "item03.png").read_bytes()
    add("truncated", good[: len(good) // 2], "truncated file here", 104)
    add("blank", Image.new("RGB", (32, 32), "white"), "white nothing at all", 105)
    return items


SETTINGS = {"format": 2, "seed": 0, "max_images": 1000, "num_test": 10, "num_dev": 6, "corpus_size": 24,
            "max_side": 48, "near_duplicate_correlation": 0.95, "max_eval_family": 8}


def sha(path: Path) -> str:
    return hashlib.sha256(Image.open(path).convert("RGB").tobytes()).hexdigest()


def eval_side(beir: Path, split: str) -> tuple[set[str], set[str]]:
    """Image hashes and captions of the queries of ``split`` and their relevant documents, over all tasks."""
    _, tasks = load_tasks(beir, split=split)
    images, texts = set(), set()
    for task in tasks:
        for query_id, relevant in task.qrels.items():
            for item in [task.queries[query_id]] + [task.corpus[d] for d in relevant]:
                if item.image is not None:
                    assert Path(item.image).is_file()
                    images.add(sha(Path(item.image)))
                if item.text:
                    texts.add(normalise_text(item.text))
    return images, texts


def training_side(path: Path) -> tuple[set[str], set[str], list]:
    examples, report = read_jsonl(path, check_images=True)
    assert report.rows_skipped == 0
    images, texts = set(), set()
    for example in examples:
        for item in (example.query, example.positive):
            if item.image:
                images.add(sha(Path(item.image)))
            if item.text:
                texts.add(normalise_text(item.text))
    return images, texts, examples


def test_build_from_png_items_split_hygiene_dedup_and_readers(tmp_path):
    items = png_items(tmp_path / "src")
    paths = build_from_items(tmp_path / "set", items, settings=SETTINGS, cache_dir=tmp_path / "cache", workers=2, progress=False)
    stats = json.loads(paths.stats.read_text())
    assert stats["duplicate_caption"] == 1 and stats["render"]["duplicate_pixels"] == 1
    assert stats["render"]["render_failed"] == 2 and stats["render"]["blank_image"] == 1
    assert stats["render"]["near_duplicate_pairs"] >= 1
    assert stats["images"] == 41  # 40 + the near copy
    split = stats["split_images"]
    assert split["test"] == 10 and split["dev"] == 6 and split["test"] + split["dev"] + split["distractors"] <= 24
    assert sum(split.values()) == 41

    detected, tasks = load_tasks(paths.beir, split="test")
    assert detected == "beir" and sorted(t.name for t in tasks) == ["image-to-text", "text-to-image", "text-to-image-text"]
    for task in tasks:
        assert len(task.corpus) == stats["tasks"][task.name]["corpus"] >= 22 and len(task.queries) == stats["tasks"][task.name]["test_queries"] > 0
        for query_id, relevant in task.qrels.items():
            query, document = task.queries[query_id], task.corpus[next(iter(relevant))]
            if task.name == "text-to-image":
                assert query.image is None and document.text is None and document.image.is_file()
            elif task.name == "image-to-text":
                assert query.text is None and query.image.is_file() and document.image is None
            else:
                assert document.text and document.image.is_file()
                assert normalise_text(query.text) != normalise_text(document.text)

    test_images, test_texts = eval_side(paths.beir, "test")
    dev_images, dev_texts = eval_side(paths.beir, "dev")
    train_images, train_texts, examples = training_side(paths.train_jsonl)
    assert not (test_images & train_images) and not (dev_images & train_images) and not (test_images & dev_images)
    assert not (test_texts & train_texts) and not (dev_texts & train_texts) and not (test_texts & dev_texts)
    near = {normalise_text("shifted copy of one"), normalise_text("item 1 bravo")}  # near-duplicates: one split
    assert near <= train_texts or not near & train_texts
    assert all(len(example.negatives) == 1 for example in examples)
    assert len(examples) == stats["train_examples"] == 3 * split["train"]  # three tasks per training image
    _, _, dev_examples = training_side(paths.dev_jsonl)
    assert len(dev_examples) == stats["dev_examples"]


def test_build_is_idempotent_and_atomic(tmp_path, monkeypatch):
    items = png_items(tmp_path / "src")
    first = build_from_items(tmp_path / "set", items, settings=SETTINGS, cache_dir=tmp_path / "cache", progress=False)
    stamp = first.stats.stat().st_mtime_ns
    again = build_from_items(tmp_path / "again", png_items(tmp_path / "src3"), settings=SETTINGS,
                             cache_dir=tmp_path / "cache", progress=False)  # renders and failures from the cache
    first_render, again_render = (json.loads(paths.stats.read_text())["render"] for paths in (first, again))
    again_examples = again_render.pop("failure_examples")
    assert first_render.pop("failure_examples") and again_examples
    assert first_render == again_render and all(line.startswith(str(tmp_path / "src3")) for line in again_examples)
    shutil.rmtree(tmp_path / "again")

    import metaembed.data.image_sets as image_sets

    def broken(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(image_sets, "write_training", broken)
    with pytest.raises(RuntimeError, match="killed"):
        build_from_items(tmp_path / "set", png_items(tmp_path / "src2"), settings={**SETTINGS, "seed": 1},
                         cache_dir=tmp_path / "cache", progress=False)
    assert json.loads(first.stats.read_text())["config"]["seed"] == 0 and first.stats.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "set", "src", "src2", "src3"]  # no partial folder left


SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/"
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="64" height="64" viewBox="0 0 64 64">
<metadata><rdf:RDF><cc:Work rdf:about=""><dc:title>{title}</dc:title><dc:description>{description}</dc:description>
<dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject><dc:creator><cc:Agent><dc:title>Some Author</dc:title></cc:Agent></dc:creator>
</cc:Work></rdf:RDF></metadata>{shapes}</svg>"""


def svg_text(seed: int, title: str, description: str = "", keywords: tuple[str, ...] = (), blank: bool = False) -> str:
    rng = random.Random(seed)
    shapes = "" if blank else "".join(
        f'<rect x="{16 * (k % 4)}" y="{16 * (k // 4)}" width="16" height="16" fill="#{rng.randrange(1 << 24):06x}"/>' for k in range(16)
    )
    return SVG.format(title=title, description=description, keywords="".join(f"<rdf:li>{k}</rdf:li>" for k in keywords), shapes=shapes)


def test_svg_metadata_and_file_name_captions(tmp_path):
    path = tmp_path / "dog.svg"
    path.write_text(svg_text(1, "Bored dog", "A dog that is bored", ("dog", "mammal")))
    meta = read_svg_metadata(path)
    assert (meta.title, meta.description, meta.keywords) == ("Bored dog", "A dog that is bored", ("dog", "mammal"))
    assert stem_caption("star_67pt11step") == "star" and stem_caption("folderMusic-open_01") == "folder music open"
    assert clean_title("Clipart by Nicu Buculei - jigsaw_red_10") == "jigsaw red 10" and clean_title("Green_Burner") == "Green Burner"
    (tmp_path / "bad.svg").write_text(svg_text(1, "Bad")[:200])
    with pytest.raises(Exception):
        read_svg_metadata(tmp_path / "bad.svg")


def test_near_duplicates_by_content_not_by_colour_fields():
    flag_a = Image.new("RGB", (60, 40), "red")
    flag_a.paste(Image.new("RGB", (60, 13), "white"), (0, 13))
    flag_b = Image.new("RGB", (60, 40), "green")
    flag_b.paste(Image.new("RGB", (60, 13), "yellow"), (0, 13))
    drawing = grid_image(7)
    moved = Image.new("RGB", (80, 80), "white")
    moved.paste(drawing.resize((56, 56)), (10, 14))
    fields = [Image.new("RGB", (30, 30), colour) for colour in ("red", "blue")]
    thumbs = [content_thumbnail(image) for image in (flag_a, flag_b, drawing, moved, *fields)]
    assert near_duplicate_pairs(thumbs, 0.95) == [(2, 3)]


def write_fixture_packages(root: Path) -> tuple[dict[str, Path], Path]:
    """An openclipart-svg tree, a Papirus tree and apt lists that mimic the real layouts."""
    svg_root = root / "openclipart-svg" / "usr/share/openclipart/svg"
    animals = ["dog", "cat", "horse", "cow", "sheep", "goat", "duck", "goose", "swan", "eagle", "owl", "crow", "fox", "wolf", "bear", "lion"]
    for n, animal in enumerate(animals):
        folder = svg_root / ("animals/mammals" if n % 2 else "animals/birds")
        folder.mkdir(parents=True, exist_ok=True)
        description = f"A friendly {animal} drawn in colour {n}" if n % 3 == 0 else "HASH(0x862bbb8)"
        (folder / f"{animal}_some_author_01.svg").write_text(svg_text(n, f"Happy {animal}", description, (animal, "zoo", f"tag{n}", "hash")))
    shapes = svg_root / "shapes/stars"
    shapes.mkdir(parents=True)
    for n in range(5):  # a collection: shared title, codes for file names -> dropped as weak captions
        (shapes / f"star_{n}pt{n + 2}step.svg").write_text(svg_text(100 + n, "gramastar", "", ("stars",)))
    icons = svg_root / "computer/icons"
    icons.mkdir(parents=True)
    for n, name in enumerate(["folder_music_open", "folder_video_open", "trash_can_full"]):
        (icons / f"{name}.svg").write_text(svg_text(200 + n, "Flat icon collection", "", ("icons", "hash")))
    (icons / "broken_icon_01.svg").write_text(svg_text(300, "Broken icon")[:150])
    (icons / "empty_drawing_01.svg").write_text(svg_text(301, "Empty drawing", blank=True))
    papirus = root / "papirus-icon-theme" / "usr/share/icons/Papirus/64x64/apps"
    papirus.mkdir(parents=True)
    apps = {"editorx": "small text editor for programmers", "gamey": "puzzle game with falling blocks",
            "painty": "raster graphics painting program"}
    for n, name in enumerate(apps):
        (papirus / f"{name}.svg").write_text(svg_text(400 + n, name))
    (papirus / "paint-alias.svg").symlink_to("painty.svg")
    (papirus / "not-a-package.svg").write_text(svg_text(410, "x"))
    lists = root / "lists"
    lists.mkdir()
    stanzas = [f"Package: {name}\nDescription-md5: {n:032x}\nDescription-en: {summary}\n {name.title()} is a program with many "
               f"features for daily work number {n}.\n" for n, (name, summary) in enumerate(apps.items())]
    (lists / "deb_dists_main_i18n_Translation-en").write_text("\n".join(stanzas))
    (lists / "deb_dists_main_binary-amd64_Packages").write_text(
        "\n".join(f"Package: {name}\nSection: {'games' if name == 'gamey' else 'graphics'}\n" for name in apps))
    return {"openclipart-svg": root / "openclipart-svg", "papirus-icon-theme": root / "papirus-icon-theme",
            "breeze-icon-theme": root / "breeze-icon-theme"}, lists


@needs_rsvg
def test_build_image_text_sets_from_fixture_packages(tmp_path):
    roots, lists = write_fixture_packages(tmp_path / "pkgs")
    paths = build_image_text_sets(tmp_path / "set", seed=3, num_test=5, num_dev=3, corpus_size=12, max_side=32,
                                  package_roots=roots, lists_dir=lists, cache_dir=tmp_path / "cache", progress=False)
    stats = json.loads(paths.stats.read_text())
    clipart = stats["sources"]["openclipart"]
    assert clipart["files"] == 26 and clipart["unreadable_svg"] == 1 and clipart["weak_file_name_caption"] == 5
    assert clipart["query_from_description"] == 6 and clipart["query_from_keywords"] == 10
    assert stats["sources"]["icons"]["with_package"] == 3 and stats["sources"]["icons"]["no_package"] == 2
    assert stats["render"]["blank_image"] == 1
    assert stats["images_per_source"] == {"openclipart": 19, "icons": 3}
    assert mask_name("Gamey is a game; gamey-data and gameyx are not gamey.", "gamey") == (
        "This program is a game; gamey-data and gameyx are not this program.")
    rows = [json.loads(line) for line in (paths.tasks["text-to-image-text"] / "corpus.jsonl").read_text().splitlines()]
    texts = {row["text"] for row in rows}
    assert texts & {"Happy dog (animals, birds)", "Happy cat (animals, mammals)", "folder music open (computer, icons)",
                    "editorx (application icon)", "gamey (application icon)"}
    queries = [json.loads(line)["text"] for line in (paths.tasks["text-to-image-text"] / "queries.jsonl").read_text().splitlines()]
    assert not any(name in query.lower() for query in queries for name in ("editorx", "gamey", "painty"))  # names masked
    examples, _ = read_jsonl(paths.train_jsonl, check_images=True)
    assert examples and all(len(e.negatives) == 1 for e in examples)
    again = build_image_text_sets(tmp_path / "set", seed=3, num_test=5, num_dev=3, corpus_size=12, max_side=32,
                                  package_roots=roots, lists_dir=lists, cache_dir=tmp_path / "cache", progress=False)
    assert again.reused


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_unpack_package_from_a_local_deb(tmp_path):
    tree = tmp_path / "build" / "tinypkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: tinypkg\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
                                             "Description: tiny test package\n")
    (tree / "usr/share/tiny").mkdir(parents=True)
    (tree / "usr/share/tiny/hello.txt").write_text("hello\n")
    (tmp_path / "cache" / "debs").mkdir(parents=True)
    (tree / "usr/share/other").mkdir(parents=True)
    (tree / "usr/share/other/big.txt").write_text("not wanted\n")
    subprocess.run(["dpkg-deb", "--build", str(tree), str(tmp_path / "cache/debs/tinypkg_1.0_all.deb")], check=True, capture_output=True)
    part = unpack_package("tinypkg", tmp_path / "cache", members=("usr/share/tiny",))
    assert (part.root / "usr/share/tiny/hello.txt").read_text() == "hello\n" and not part.reused
    assert not (part.root / "usr/share/other").exists()
    assert unpack_package("tinypkg", tmp_path / "cache", members=("usr/share/tiny",)).reused
    full = unpack_package("tinypkg", tmp_path / "cache")  # more than the partial unpack holds: unpacked again
    assert not full.reused and (full.root / "usr/share/other/big.txt").is_file()
    assert unpack_package("tinypkg", tmp_path / "cache", members=("usr/share/tiny",)).reused


@pytest.mark.slow
@needs_rsvg
@pytest.mark.skipif(not (default_cache_dir() / "unpacked/openclipart-svg/.complete").is_file(),
                    reason="openclipart-svg not unpacked in the cache (python -m metaembed.data.image_sets fetches it)")
def test_real_openclipart_small_build(tmp_path):
    roots = {"openclipart-svg": default_cache_dir() / "unpacked/openclipart-svg"}
    paths = build_image_text_sets(tmp_path / "set", sources=("openclipart",), max_images=300, num_test=60, num_dev=30,
                                  corpus_size=150, package_roots=roots, progress=False)
    stats = json.loads(paths.stats.read_text())
    assert stats["sources"]["openclipart"]["files"] == 8121 and stats["images"] > 250
    test_images, test_texts = eval_side(paths.beir, "test")
    train_images, train_texts, _ = training_side(paths.train_jsonl)
    assert not (test_images & train_images) and not (test_texts & train_texts)
