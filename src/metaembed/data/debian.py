"""A real query -> passage retrieval set built from Debian's package descriptions.

Every Debian machine can fetch them (``apt-get update -o Acquire::Languages=en`` writes
``/var/lib/apt/lists/*_i18n_Translation-en.lz4``): ~60k packages, each a one-line summary (the query) and
a paragraph-long description (the passage). Nobody in this project wrote that text, so it is a fair
benchmark for training and evaluation on a machine without the Hugging Face hub.

Choices (the issue was silent on them):
- Descriptions are deduplicated by passage text and by summary (the first package in name order keeps
  it): an ambiguous query or two identical passages would make the qrels wrong. Passages shorter than
  ``min_passage_words`` words and summaries shorter than ``min_query_words`` words are dropped.
- The split is by *package family*: packages whose descriptions share their first paragraph
  (``libfoo1``, ``libfoo-dev``, ``libfoo-doc``) are one family and always land in the same split, so a
  near-duplicate of a test passage is never trained on. Families are shuffled with ``seed``.
- Output: one BEIR folder (``beir/``: corpus.jsonl, queries.jsonl, qrels/dev.tsv, qrels/test.tsv) whose
  corpus holds the test and dev passages plus distractor passages from families used neither in train
  nor as queries, up to ``corpus_size``; and training JSONL files (``train.jsonl``, ``dev.jsonl``) with
  ``{"query", "positive", "negatives"}``. The one hard negative per example is a passage of another
  family from the same Debian section (read from the Packages lists when present) or, failing that,
  with the same package-name prefix (``python3-``, ``lib``...), else any other family: cheap, no BM25.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

APT_LISTS_DIR = Path("/var/lib/apt/lists")
APT_UPDATE_COMMAND = ["apt-get", "update", "-o", "Acquire::Languages=en"]
TRANSLATION_GLOB = "*_i18n_Translation-en*"
PACKAGES_GLOB = "*_binary-*_Packages*"


class DebianDataError(RuntimeError):
    """The Debian description lists are missing or unusable; the message says how to get them."""


@dataclass(frozen=True)
class DebianDescription:
    """One package's English description: the summary line and the long description below it."""

    package: str
    md5: str
    summary: str
    passage: str

    @property
    def first_paragraph(self) -> str:
        return self.passage.split("\n\n", 1)[0]


@dataclass(frozen=True)
class DebianRetrievalPaths:
    """Where :func:`build_debian_retrieval_set` wrote everything."""

    root: Path
    beir: Path
    train_jsonl: Path
    dev_jsonl: Path
    stats: Path


# ------------------------------------------------------------------------------------------ reading
def read_list_file(path: str | Path) -> str:
    """Decompress one apt list file (.lz4, .gz, .xz or plain) to text."""
    path = Path(path)
    if path.suffix == ".lz4":
        try:
            import lz4.frame

            data = lz4.frame.decompress(path.read_bytes())
        except ImportError:
            if shutil.which("lz4cat") is None:
                raise DebianDataError(
                    f"cannot read {path}: install the 'lz4' Python package or the lz4 tool (apt-get install lz4)"
                ) from None
            data = subprocess.run(["lz4cat", str(path)], check=True, capture_output=True).stdout
    elif path.suffix == ".gz":
        data = gzip.decompress(path.read_bytes())
    elif path.suffix == ".xz":
        data = lzma.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def _paragraphs_from_long_description(lines: list[str]) -> str:
    """Debian long-description lines (leading space removed) -> text: " ." is a paragraph break and lines
    indented further (lists, code) keep their own line; other lines of a paragraph are joined by spaces."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip() == ".":
            if current:
                paragraphs.append("".join(current).strip())
            current = []
        elif line.startswith(" "):  # verbatim line (two spaces in the file)
            current.append(("\n" if current else "") + line.strip())
        else:
            current.append((" " if current else "") + line.strip())
    if current:
        paragraphs.append("".join(current).strip())
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def parse_translation(text: str, source: str = "<text>") -> Iterator[DebianDescription]:
    """Parse a Translation-en file: stanzas of ``Package:``, ``Description-md5:``, ``Description-en:``.

    A stanza without a package name or description is skipped with a warning naming ``source`` and the line.
    """
    package = md5 = summary = None
    long_lines: list[str] = []
    stanza_line = 1
    in_description = False

    def finish() -> DebianDescription | None:
        if package and summary is not None:
            return DebianDescription(package, md5 or "", summary.strip(), _paragraphs_from_long_description(long_lines))
        if package or summary is not None:
            print(f"warning: {source}:{stanza_line}: stanza without Package or Description-en, skipped", file=sys.stderr)
        return None

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            description = finish()
            if description is not None:
                yield description
            package = md5 = summary = None
            long_lines = []
            in_description = False
            stanza_line = number + 1
            continue
        if line.startswith(" ") and in_description:
            long_lines.append(line[1:])
            continue
        in_description = False
        key, _, value = line.partition(":")
        if key == "Package":
            package = value.strip()
        elif key == "Description-md5":
            md5 = value.strip()
        elif key.startswith("Description-"):
            summary = value.strip()
            in_description = True
    description = finish()
    if description is not None:
        yield description


def parse_sections(text: str) -> dict[str, str]:
    """Package -> Section from a Packages list (the section part after a '/' area prefix such as contrib/)."""
    sections: dict[str, str] = {}
    package = None
    for line in text.splitlines():
        if line.startswith("Package:"):
            package = line.partition(":")[2].strip()
        elif line.startswith("Section:") and package:
            sections.setdefault(package, line.partition(":")[2].strip().rsplit("/", 1)[-1])
    return sections


def find_translation_files(lists_dir: str | Path = APT_LISTS_DIR, run_apt_update: bool | None = None) -> list[Path]:
    """The Translation-en files under ``lists_dir``; runs ``apt-get update`` first when they are missing and
    we are root (``run_apt_update=None``), else explains how to get them."""
    lists_dir = Path(lists_dir)
    files = sorted(path for path in lists_dir.glob(TRANSLATION_GLOB) if not path.name.endswith(".diff"))
    if files:
        return files
    command = " ".join(APT_UPDATE_COMMAND)
    may_run = run_apt_update if run_apt_update is not None else (hasattr(os, "geteuid") and os.geteuid() == 0)
    if may_run and lists_dir == APT_LISTS_DIR and shutil.which("apt-get"):
        print(f"no Debian descriptions in {lists_dir}: running `{command}`", file=sys.stderr)
        subprocess.run(APT_UPDATE_COMMAND, check=True)
        files = sorted(lists_dir.glob(TRANSLATION_GLOB))
        if files:
            return files
    raise DebianDataError(
        f"no Debian package descriptions ({TRANSLATION_GLOB}) in {lists_dir}. Fetch them with "
        f"`sudo {command}` (Debian/Ubuntu), then run this again."
    )


def load_descriptions(translation_files: Iterable[str | Path]) -> list[DebianDescription]:
    """All descriptions from the given files, one per (package, md5), in package-name order."""
    seen: dict[tuple[str, str], DebianDescription] = {}
    for path in translation_files:
        for description in parse_translation(read_list_file(path), source=str(path)):
            seen.setdefault((description.package, description.md5), description)
    return sorted(seen.values(), key=lambda d: (d.package, d.md5))


def load_sections(lists_dir: str | Path) -> dict[str, str]:
    """Package -> Debian section from every Packages list in ``lists_dir`` (empty when there are none)."""
    sections: dict[str, str] = {}
    for path in sorted(Path(lists_dir).glob(PACKAGES_GLOB)):
        if path.name.endswith(".diff"):
            continue
        for package, section in parse_sections(read_list_file(path)).items():
            sections.setdefault(package, section)
    return sections


# ------------------------------------------------------------------------------------------ building
def clean_descriptions(
    descriptions: Iterable[DebianDescription], min_query_words: int = 2, min_passage_words: int = 12
) -> tuple[list[DebianDescription], dict[str, int]]:
    """Drop short descriptions and duplicates (by passage text, then by summary); returns kept and counts."""
    kept: list[DebianDescription] = []
    seen_passages: set[str] = set()
    seen_summaries: set[str] = set()
    counts = {"read": 0, "too_short": 0, "duplicate_passage": 0, "duplicate_summary": 0}
    for description in descriptions:
        counts["read"] += 1
        if len(description.summary.split()) < min_query_words or len(description.passage.split()) < min_passage_words:
            counts["too_short"] += 1
            continue
        passage_key = " ".join(description.passage.lower().split())
        summary_key = " ".join(description.summary.lower().split())
        if passage_key in seen_passages:
            counts["duplicate_passage"] += 1
            continue
        if summary_key in seen_summaries:
            counts["duplicate_summary"] += 1
            continue
        seen_passages.add(passage_key)
        seen_summaries.add(summary_key)
        kept.append(description)
    counts["kept"] = len(kept)
    return kept, counts


def package_prefix(package: str) -> str:
    """A crude family-of-packages key: ``python3-foo`` -> ``python3``, ``libfoo2`` -> ``lib``."""
    if package.startswith("lib") and not package.startswith("libre"):
        return "lib"
    return re.split(r"[-.+0-9]", package, maxsplit=1)[0] or package


def _families(descriptions: list[DebianDescription]) -> list[list[DebianDescription]]:
    groups: dict[str, list[DebianDescription]] = defaultdict(list)
    for description in descriptions:
        groups[" ".join(description.first_paragraph.lower().split())].append(description)
    return list(groups.values())


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def build_debian_retrieval_set(
    out_dir: str | Path,
    seed: int = 0,
    *,
    num_test_queries: int = 2000,
    num_dev_queries: int = 1000,
    corpus_size: int = 12000,
    lists_dir: str | Path = APT_LISTS_DIR,
    translation_files: Iterable[str | Path] | None = None,
    hard_negatives: bool = True,
    min_query_words: int = 2,
    min_passage_words: int = 12,
    run_apt_update: bool | None = None,
) -> DebianRetrievalPaths:
    """Build the Debian summary -> description retrieval set in ``out_dir`` (see the module docstring).

    Test and dev queries come from disjoint package families; the BEIR corpus is their passages plus
    distractors from families not used in train, ``corpus_size`` passages in all; every other family is
    training data. Deterministic for a given ``seed`` and input.
    """
    out_dir = Path(out_dir)
    files = list(translation_files) if translation_files is not None else find_translation_files(lists_dir, run_apt_update)
    descriptions, counts = clean_descriptions(load_descriptions(files), min_query_words, min_passage_words)
    sections = load_sections(lists_dir) if Path(lists_dir).is_dir() else {}

    families = _families(descriptions)
    random.Random(seed).shuffle(families)
    needed = num_test_queries + num_dev_queries
    if corpus_size < needed:
        raise ValueError(f"corpus_size {corpus_size} is smaller than the {needed} test + dev passages it must hold")

    test: list[DebianDescription] = []
    dev: list[DebianDescription] = []
    rest: list[list[DebianDescription]] = []
    for family in families:
        if len(test) < num_test_queries:
            test.extend(family)
        elif len(dev) < num_dev_queries:
            dev.extend(family)
        else:
            rest.append(family)
    # Families are added whole, so test and dev may overshoot by part of their last family: that excess
    # becomes distractors (the passage stays in the corpus; its query is not asked).
    distractors = test[num_test_queries:] + dev[num_dev_queries:]
    test, dev = test[:num_test_queries], dev[:num_dev_queries]
    distractors_wanted = corpus_size - needed
    train: list[DebianDescription] = []
    for family in rest:
        if len(distractors) + len(family) <= distractors_wanted:
            distractors.extend(family)
        else:
            train.extend(family)
    if len(test) < num_test_queries or len(dev) < num_dev_queries or not train:
        raise DebianDataError(
            f"only {len(descriptions)} usable descriptions in {[str(f) for f in files]}: not enough for "
            f"{num_test_queries} test + {num_dev_queries} dev queries, a {corpus_size}-passage corpus and a train split"
        )

    beir = out_dir / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    corpus_rows = [{"_id": f"d-{d.package}", "title": "", "text": d.passage} for d in sorted(test + dev + distractors, key=lambda d: d.package)]
    _write_jsonl(beir / "corpus.jsonl", corpus_rows)
    _write_jsonl(beir / "queries.jsonl", ({"_id": f"q-{d.package}", "text": d.summary} for d in test + dev))
    for split, members in (("test", test), ("dev", dev)):
        with (beir / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for d in members:
                handle.write(f"q-{d.package}\td-{d.package}\t1\n")

    rng = random.Random(seed + 1)

    def training_rows(members: list[DebianDescription], pool: list[DebianDescription]) -> Iterator[dict]:
        family_of = {d.package: " ".join(d.first_paragraph.lower().split()) for d in pool}
        by_section: dict[str, list[DebianDescription]] = defaultdict(list)
        by_prefix: dict[str, list[DebianDescription]] = defaultdict(list)
        for d in pool:
            if d.package in sections:
                by_section[sections[d.package]].append(d)
            by_prefix[package_prefix(d.package)].append(d)
        for d in members:
            row = {"query": d.summary, "positive": d.passage, "negatives": []}
            if hard_negatives:
                candidates = by_section.get(sections.get(d.package, ""), []) or by_prefix.get(package_prefix(d.package), [])
                negative = None
                for _ in range(8):
                    options = candidates if candidates and _ < 6 else pool
                    pick = options[rng.randrange(len(options))]
                    if family_of[pick.package] != family_of[d.package]:
                        negative = pick
                        break
                if negative is not None:
                    row["negatives"] = [negative.passage]
            yield row

    train_jsonl, dev_jsonl = out_dir / "train.jsonl", out_dir / "dev.jsonl"
    n_train = _write_jsonl(train_jsonl, training_rows(train, train))
    n_dev = _write_jsonl(dev_jsonl, training_rows(dev, dev + distractors))
    stats = {
        **counts,
        "families": len(families),
        "seed": seed,
        "train_examples": n_train,
        "dev_examples": n_dev,
        "dev_queries": len(dev),
        "test_queries": len(test),
        "corpus_passages": len(corpus_rows),
        "distractor_passages": len(distractors),
        "packages_with_section": sum(1 for d in descriptions if d.package in sections),
        "hard_negatives": hard_negatives,
        "sources": [str(f) for f in files],
    }
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return DebianRetrievalPaths(root=out_dir, beir=beir, train_jsonl=train_jsonl, dev_jsonl=dev_jsonl, stats=stats_path)


def builder_parser(module_doc: str, prog: str, *, dev_queries: int, corpus_size: int) -> argparse.ArgumentParser:
    """The command line both Debian set builders share: OUT_DIR, seed, split sizes and the apt lists folder."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0], prog=prog)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-queries", type=int, default=2000)
    parser.add_argument("--dev-queries", type=int, default=dev_queries)
    parser.add_argument("--corpus-size", type=int, default=corpus_size)
    parser.add_argument("--lists-dir", default=str(APT_LISTS_DIR))
    return parser


def run_builder(build: Callable[..., DebianRetrievalPaths], args: argparse.Namespace, **extra: object) -> None:
    """Build a Debian set from parsed ``args`` and print its stats and where it went (a clear error if the lists are missing)."""
    try:
        paths = build(args.out_dir, args.seed, num_test_queries=args.test_queries, num_dev_queries=args.dev_queries,
                      corpus_size=args.corpus_size, lists_dir=args.lists_dir, **extra)
    except DebianDataError as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(json.loads(paths.stats.read_text()), indent=2))
    print(f"BEIR folder: {paths.beir}\ntraining JSONL: {paths.train_jsonl}\ndev JSONL: {paths.dev_jsonl}")


def main(argv: list[str] | None = None) -> None:
    """``python -m metaembed.data.debian OUT_DIR``: build the set and print where it went."""
    parser = builder_parser(__doc__, "python -m metaembed.data.debian", dev_queries=1000, corpus_size=12000)
    parser.add_argument("--no-hard-negatives", action="store_true")
    args = parser.parse_args(argv)
    run_builder(build_debian_retrieval_set, args, hard_negatives=not args.no_hard_negatives)


if __name__ == "__main__":
    main()
