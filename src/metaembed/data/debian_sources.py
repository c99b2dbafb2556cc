"""A multi-facet retrieval set from Debian: one *source* package's binaries as the document, one binary's
summary as the query.

A Debian source package builds several binary packages (``ngtcp2`` -> ``libngtcp2-9``, ``libngtcp2-dev``,
``ngtcp2-client``, ``ngtcp2-server``); each has its own summary and description. The document of a
source is the descriptions of its binaries, one after another; a query is the summary of ONE of them. So a
document covers several things (a library, its headers, a client, a server, documentation) and each of
its queries asks about one part of it: the case where several vectors per document should beat one.
The ``Source:`` field of the Packages lists maps binaries to sources; descriptions come from the same
Translation-en files as :mod:`metaembed.data.debian` (text nobody in this project wrote).

Choices (the issue was silent on them):
- A source is used when at least two of its binaries have descriptions; at most ``max_packages`` binaries
  (in name order) make its document. Paragraphs repeated between binaries (the shared introduction most
  of them open with) are written once; each binary adds its other paragraphs, up to
  ``max_words_per_package`` words, so every binary that gives a query has text of its own in the document.
- Queries are summaries of at least ``min_query_words`` words; a summary that occurs more than once in
  the archive ("Transitional package", "documentation") is dropped everywhere: it cannot have one answer.
- The split is by *family*: sources whose binaries share a first description paragraph are one family
  and always land in the same split (``foo`` and ``python-foo`` often do). Families are shuffled with
  ``seed``; test and dev take whole families until they hold their number of queries; distractor
  documents come from families used neither in training nor as queries, up to ``corpus_size``.
- Output as :func:`metaembed.data.debian.build_debian_retrieval_set`: ``beir/`` (corpus ``s-<source>``,
  queries ``q-<binary>``, qrels/dev.tsv and qrels/test.tsv), ``train.jsonl`` / ``dev.jsonl`` rows
  ``{"query", "positive", "negatives"}`` with one hard negative: the document of another family's source
  in the same Debian section (or any other, failing that), and ``stats.json``.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from metaembed.data.debian import (
    APT_LISTS_DIR,
    PACKAGES_GLOB,
    DebianDataError,
    DebianDescription,
    DebianRetrievalPaths,
    _write_jsonl,
    builder_parser,
    find_translation_files,
    load_descriptions,
    read_list_file,
    run_builder,
)


@dataclass(frozen=True)
class SourceDocument:
    """One source package: its document text and the binaries whose summaries are its queries."""

    source: str
    text: str
    section: str
    queries: tuple[tuple[str, str], ...]
    """(binary package, summary) pairs, in name order."""
    family_keys: tuple[str, ...]
    """The normalised first paragraphs of its binaries: sources sharing one are one family."""


def parse_sources(text: str) -> dict[str, tuple[str, str]]:
    """Binary package -> (source package, section) from a Packages list; a binary without ``Source:`` is its own source."""
    found: dict[str, tuple[str, str]] = {}
    package = source = section = None

    def finish() -> None:
        if package:
            found.setdefault(package, (source or package, section or ""))

    for line in text.splitlines():
        if not line.strip():
            finish()
            package = source = section = None
        elif line.startswith("Package:"):
            package = line.partition(":")[2].strip()
        elif line.startswith("Source:"):
            source = line.partition(":")[2].split()[0]  # "Source: foo (1.2-3)" names a version too
        elif line.startswith("Section:"):
            section = line.partition(":")[2].strip().rsplit("/", 1)[-1]
    finish()
    return found


def load_sources(lists_dir: str | Path) -> dict[str, tuple[str, str]]:
    """Binary -> (source, section) from every Packages list in ``lists_dir``."""
    sources: dict[str, tuple[str, str]] = {}
    for path in sorted(Path(lists_dir).glob(PACKAGES_GLOB)):
        if not path.name.endswith(".diff"):
            for package, value in parse_sources(read_list_file(path)).items():
                sources.setdefault(package, value)
    return sources


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _cut_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit]) + " ..."


def source_documents(
    descriptions: Iterable[DebianDescription],
    sources: dict[str, tuple[str, str]],
    *,
    max_packages: int = 6,
    max_words_per_package: int = 40,
    min_query_words: int = 2,
) -> tuple[list[SourceDocument], dict[str, int]]:
    """Group binary descriptions by source into multi-facet documents; returns them and counts."""
    by_package: dict[str, DebianDescription] = {}
    for description in descriptions:
        by_package.setdefault(description.package, description)
    summary_count: dict[str, int] = defaultdict(int)
    for description in by_package.values():
        summary_count[_normalise(description.summary)] += 1

    members: dict[str, list[DebianDescription]] = defaultdict(list)
    for package in sorted(by_package):
        if package in sources:
            members[sources[package][0]].append(by_package[package])
    counts = {"binaries_with_source": sum(1 for p in by_package if p in sources), "source_packages": len(members),
              "sources_single_binary": 0, "ambiguous_summaries_dropped": 0, "sources_without_two_queries": 0}
    documents: list[SourceDocument] = []
    for source in sorted(members):
        binaries = members[source][:max_packages]
        if len(binaries) < 2:
            counts["sources_single_binary"] += 1
            continue
        seen: set[str] = set()
        parts: list[str] = []
        queries: list[tuple[str, str]] = []
        for binary in binaries:
            own = [p for p in binary.passage.split("\n\n") if p.strip() and _normalise(p) not in seen]
            seen.update(_normalise(p) for p in own)
            if own:
                parts.append(_cut_words("\n\n".join(own), max_words_per_package))
            summary_key = _normalise(binary.summary)
            if summary_count[summary_key] > 1:
                counts["ambiguous_summaries_dropped"] += 1
            elif own and len(binary.summary.split()) >= min_query_words and summary_key not in _normalise(" ".join(parts)):
                queries.append((binary.package, binary.summary))
        if len(parts) < 2 or len(queries) < 1:
            counts["sources_without_two_queries"] += 1
            continue
        family_keys = tuple(sorted({_normalise(b.first_paragraph) for b in binaries}))
        documents.append(SourceDocument(source, "\n\n".join(parts), sources[binaries[0].package][1], tuple(queries), family_keys))
    counts["documents"] = len(documents)
    counts["queries"] = sum(len(d.queries) for d in documents)
    return documents, counts


def group_by_shared_keys(keys: Sequence[Iterable[str]]) -> list[list[int]]:
    """Indices of items grouped so that items sharing any key are in one group (union-find); members in index
    order, groups in order of their first member's root. Used for every family-based split."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for index, item_keys in enumerate(keys):
        for key in item_keys:
            if key in owner:
                parent[root(index)] = root(owner[key])
            else:
                owner[key] = index
    groups: dict[int, list[int]] = defaultdict(list)
    for index in range(len(keys)):
        groups[root(index)].append(index)
    return list(groups.values())


def _families(documents: list[SourceDocument]) -> list[list[SourceDocument]]:
    """Sources that share any binary's first paragraph are one family (union-find over those paragraphs)."""
    groups = group_by_shared_keys([document.family_keys for document in documents])
    return sorted(([documents[i] for i in group] for group in groups), key=lambda family: family[0].source)


def build_debian_sources_retrieval_set(
    out_dir: str | Path,
    seed: int = 0,
    *,
    num_test_queries: int = 2000,
    num_dev_queries: int = 500,
    corpus_size: int = 4000,
    lists_dir: str | Path = APT_LISTS_DIR,
    translation_files: Iterable[str | Path] | None = None,
    max_packages: int = 6,
    max_words_per_package: int = 40,
    run_apt_update: bool | None = None,
) -> DebianRetrievalPaths:
    """Build the source-package retrieval set in ``out_dir`` (see the module docstring). Deterministic per seed."""
    out_dir = Path(out_dir)
    files = list(translation_files) if translation_files is not None else find_translation_files(lists_dir, run_apt_update)
    sources = load_sources(lists_dir)
    if not sources:
        raise DebianDataError(f"no Packages lists ({PACKAGES_GLOB}) in {lists_dir}: run `apt-get update` first")
    documents, counts = source_documents(
        load_descriptions(files), sources, max_packages=max_packages, max_words_per_package=max_words_per_package
    )
    families = _families(documents)
    random.Random(seed).shuffle(families)
    family_of = {d.source: number for number, family in enumerate(families) for d in family}

    test: list[SourceDocument] = []
    dev: list[SourceDocument] = []
    rest: list[list[SourceDocument]] = []
    test_queries = dev_queries = 0
    for family in families:
        size = sum(len(d.queries) for d in family)
        if test_queries < num_test_queries:
            test.extend(family)
            test_queries += size
        elif dev_queries < num_dev_queries:
            dev.extend(family)
            dev_queries += size
        else:
            rest.append(family)
    distractors: list[SourceDocument] = []
    train: list[SourceDocument] = []
    for family in rest:
        if len(test) + len(dev) + len(distractors) + len(family) <= corpus_size:
            distractors.extend(family)
        else:
            train.extend(family)
    if test_queries < num_test_queries or dev_queries < num_dev_queries or not train:
        raise DebianDataError(
            f"only {counts['documents']} multi-package sources with {counts['queries']} queries: not enough for "
            f"{num_test_queries} test + {num_dev_queries} dev queries and a train split"
        )

    beir = out_dir / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = sorted(test + dev + distractors, key=lambda d: d.source)
    _write_jsonl(beir / "corpus.jsonl", ({"_id": f"s-{d.source}", "title": "", "text": d.text} for d in corpus))
    _write_jsonl(beir / "queries.jsonl", ({"_id": f"q-{p}", "text": s} for d in test + dev for p, s in d.queries))
    for split, members in (("test", test), ("dev", dev)):
        with (beir / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for d in members:
                for package, _ in d.queries:
                    handle.write(f"q-{package}\ts-{d.source}\t1\n")

    rng = random.Random(seed + 1)

    def training_rows(members: list[SourceDocument], pool: list[SourceDocument]) -> Iterator[dict]:
        by_section: dict[str, list[SourceDocument]] = defaultdict(list)
        for d in pool:
            by_section[d.section].append(d)
        for d in members:
            for _, summary in d.queries:
                options = [o for o in by_section[d.section] if family_of[o.source] != family_of[d.source]]
                options = options or [o for o in pool if family_of[o.source] != family_of[d.source]]
                negatives = [options[rng.randrange(len(options))].text] if options else []
                yield {"query": summary, "positive": d.text, "negatives": negatives}

    train_jsonl, dev_jsonl = out_dir / "train.jsonl", out_dir / "dev.jsonl"
    n_train = _write_jsonl(train_jsonl, training_rows(train, train))
    n_dev = _write_jsonl(dev_jsonl, training_rows(dev, dev + distractors))
    words = [len(d.text.split()) for d in corpus]
    stats = {
        **counts, "families": len(families), "seed": seed, "max_packages": max_packages,
        "max_words_per_package": max_words_per_package, "train_examples": n_train, "train_documents": len(train),
        "dev_examples": n_dev, "dev_queries": dev_queries, "test_queries": test_queries,
        "corpus_documents": len(corpus), "distractor_documents": len(distractors),
        "corpus_mean_words": round(sum(words) / len(words), 1),
        "test_queries_per_document": round(test_queries / len(test), 2),
        "sources": [str(f) for f in files],
    }
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return DebianRetrievalPaths(root=out_dir, beir=beir, train_jsonl=train_jsonl, dev_jsonl=dev_jsonl, stats=stats_path)


def main(argv: list[str] | None = None) -> None:
    """``python -m metaembed.data.debian_sources OUT_DIR``: build the set and print where it went."""
    parser = builder_parser(__doc__, "python -m metaembed.data.debian_sources", dev_queries=500, corpus_size=4000)
    run_builder(build_debian_sources_retrieval_set, parser.parse_args(argv))


if __name__ == "__main__":
    main()
