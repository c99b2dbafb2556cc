"""The multi-facet Debian source-package set, on synthetic Translation / Packages files written here."""

from __future__ import annotations

import json
from pathlib import Path


from metaembed.data.beir import load_beir
from metaembed.data.debian import DebianDescription
from metaembed.data.debian_sources import build_debian_sources_retrieval_set, parse_sources, source_documents

TOPICS = ["editor", "compressor", "database", "game", "font", "library", "shell", "browser"]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
ROLES = [("", "command line tool"), ("lib", "shared library"), ("-dev", "development headers"), ("-doc", "manual pages")]


def stanza(package: str, summary: str, paragraphs: list[str]) -> str:
    body = "\n .\n".join(" " + paragraph for paragraph in paragraphs)
    return f"Package: {package}\nDescription-md5: {abs(hash(package)):032x}\nDescription-en: {summary}\n{body}\n"


def write_lists(folder: Path, sources: int) -> Path:
    """``sources`` source packages, each building 2-4 binaries that share an introduction paragraph."""
    folder.mkdir(parents=True, exist_ok=True)
    translations, packages = [], []
    for n in range(sources):
        topic = TOPICS[n % len(TOPICS)]
        intro = f"Project {n} is a {topic} with " + " ".join(WORDS[(n + k) % 16] for k in range(6)) + " features."
        for prefix_suffix, role in ROLES[: 2 + n % 3]:
            binary = f"lib{topic}{n}" if prefix_suffix == "lib" else f"{topic}{n}{prefix_suffix if prefix_suffix != 'lib' else ''}"
            translations.append(stanza(binary, f"{topic} {n} {role} {WORDS[n % 16]}",
                                       [intro, f"This package holds the {role} of project {n}, with {WORDS[(n * 3) % 16]} support."]))
            packages.append(f"Package: {binary}\nSource: src{n} (1.{n}-1)\nSection: {'contrib/' if n % 5 == 0 else ''}{topic}\n")
    translations.append(stanza("lonely", "a lonely package alone", ["It has no siblings at all, none whatsoever."]))
    packages.append("Package: lonely\nSection: misc\n")
    (folder / "x_main_i18n_Translation-en").write_text("\n".join(translations))
    (folder / "x_main_binary-amd64_Packages").write_text("\n".join(packages))
    return folder


def test_parse_sources_reads_source_version_and_section():
    text = "Package: a\nSource: s (1.0)\nSection: contrib/net\n\nPackage: b\nSection: utils\n"
    assert parse_sources(text) == {"a": ("s", "net"), "b": ("b", "utils")}


def test_documents_share_paragraphs_once_and_drop_ambiguous_queries():
    intro = "A shared introduction paragraph about the whole project and its many features."
    descriptions = [
        DebianDescription("foo", "", "foo command line client", f"{intro}\n\nThis package holds the client."),
        DebianDescription("libfoo1", "", "foo shared library runtime", f"{intro}\n\nThis package holds the library."),
        DebianDescription("foo-doc", "", "Documentation", f"{intro}\n\nThis package holds the manual."),
        DebianDescription("bar-doc", "", "Documentation", "Bar is another thing entirely.\n\nManual for bar."),
        DebianDescription("single", "", "one package only", "It stands alone in its source package."),
    ]
    sources = {"foo": ("foo", "net"), "libfoo1": ("foo", "libs"), "foo-doc": ("foo", "doc"),
               "bar-doc": ("bar", "doc"), "single": ("single", "misc")}
    documents, counts = source_documents(descriptions, sources)
    assert [d.source for d in documents] == ["foo"]  # bar and single build one binary each: no facets
    foo = documents[0]
    assert foo.text.count(intro) == 1
    assert "holds the client" in foo.text and "holds the library" in foo.text and "holds the manual" in foo.text
    # "Documentation" is the summary of two packages: it has no single answer and is never asked
    assert foo.queries == (("foo", "foo command line client"), ("libfoo1", "foo shared library runtime"))
    assert counts["ambiguous_summaries_dropped"] == 1 and counts["sources_single_binary"] == 2


def test_build_splits_by_family_and_writes_beir(tmp_path):
    lists = write_lists(tmp_path / "lists", 120)
    paths = build_debian_sources_retrieval_set(tmp_path / "out", seed=1, num_test_queries=60, num_dev_queries=30,
                                               corpus_size=80, lists_dir=lists, translation_files=list(lists.glob("*Translation*")))
    test = load_beir(paths.beir, "test")
    dev = load_beir(paths.beir, "dev")
    stats = json.loads(paths.stats.read_text())
    assert len(test.queries) == stats["test_queries"] >= 60 and len(dev.queries) == stats["dev_queries"] >= 30
    assert len(test.corpus) == stats["corpus_documents"] <= 80
    test_docs = {doc for judged in test.qrels.values() for doc in judged}
    dev_docs = {doc for judged in dev.qrels.values() for doc in judged}
    assert test_docs.isdisjoint(dev_docs) and test_docs <= set(test.corpus)
    assert stats["test_queries_per_document"] > 1.5  # several queries per document: multi-facet
    corpus_text = {test.corpus[doc].text for doc in test.corpus}
    train_rows = [json.loads(line) for line in paths.train_jsonl.read_text().splitlines()]
    assert train_rows and all(row["positive"] not in corpus_text for row in train_rows)
    assert all(row["negatives"] and row["negatives"][0] != row["positive"] for row in train_rows)
    for query_id, judged in test.qrels.items():
        (doc,) = judged
        assert test.queries[query_id].text.lower() not in test.corpus[doc].text.lower()
    again = build_debian_sources_retrieval_set(tmp_path / "again", seed=1, num_test_queries=60, num_dev_queries=30,
                                               corpus_size=80, lists_dir=lists, translation_files=list(lists.glob("*Translation*")))
    assert (again.beir / "qrels" / "test.tsv").read_text() == (paths.beir / "qrels" / "test.tsv").read_text()
    assert again.train_jsonl.read_text() == paths.train_jsonl.read_text()
