"""The stdlib-docstring retrieval-set builder: one real build (small numbers) shared by the tests, checked for
BEIR loading, split hygiene, multi-facet documents and determinism; member selection on a fake module."""

from __future__ import annotations

import json
import types
from collections import Counter
from pathlib import Path

import pytest

from metaembed.data.beir import load_beir
from metaembed.data.pydocs import (
    DENSE,
    Member,
    build_package_docs_training,
    build_pydocs_retrieval_set,
    module_members,
    shortened,
    split_docstring,
    walk_stdlib_in_child,
)

SMALL = dict(num_test_queries=300, num_dev_queries=100, corpus_size=250)
FILES = ("beir/corpus.jsonl", "beir/queries.jsonl", "beir/qrels/test.tsv", "beir/qrels/dev.tsv", "train.jsonl", "dev.jsonl")


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def qrels(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")[:2]) for line in path.read_text(encoding="utf-8").splitlines()[1:]]


def family(module: str) -> str:
    return module.split(".")[0]


def text_family(document_text: str) -> str:
    """A document's first line is its module name, or ``module: <module docstring body>``."""
    return family(document_text.split("\n", 1)[0].split(":", 1)[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_pydocs_retrieval_set(tmp_path_factory.mktemp("pydocs") / "out", seed=0, **SMALL)


@pytest.fixture(scope="module")
def walk():
    return walk_stdlib_in_child()


def test_beir_folder_loads_and_every_qrel_resolves(built):
    stats = json.loads(built.stats.read_text())
    assert stats["test_queries"] == 300 and stats["dev_queries"] == 100 and not stats["shortfall"]
    assert stats["modules_walked"] > 300 and stats["python"].count(".") == 2
    test, dev = load_beir(built.beir, "test"), load_beir(built.beir, "dev")
    assert not test.issues.counts and not dev.issues.counts
    assert len(test.qrels) == 300 and len(dev.qrels) == 100 and not set(test.qrels) & set(dev.qrels)
    assert len(test.corpus) == stats["corpus_documents"] >= 250
    assert (built.beir / "qrels" / "test.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
    corpus_ids = {row["_id"] for row in rows(built.beir / "corpus.jsonl")}
    query_ids = {row["_id"] for row in rows(built.beir / "queries.jsonl")}
    pairs = qrels(built.beir / "qrels" / "test.tsv") + qrels(built.beir / "qrels" / "dev.tsv")
    assert len(pairs) == len(query_ids) == 400 and all(q in query_ids and d in corpus_ids for q, d in pairs)
    train = rows(built.train_jsonl)
    assert len(train) == stats["train_queries"] > 100
    assert all(set(row) == {"query", "positive", "negatives"} and len(row["negatives"]) == 1 for row in train)
    assert all(row["negatives"][0] != row["positive"] for row in train + rows(built.dev_jsonl))


def test_splits_share_no_family_no_query_and_no_query_is_in_a_document(built):
    corpus = {row["_id"]: row["text"] for row in rows(built.beir / "corpus.jsonl")}
    queries = {row["_id"]: row["text"] for row in rows(built.beir / "queries.jsonl")}
    families = {
        split: {family(q.removeprefix("q-").split(":")[0]) for q, _ in qrels(built.beir / "qrels" / f"{split}.tsv")}
        for split in ("test", "dev")
    }
    train = rows(built.train_jsonl)
    families["train"] = {text_family(row["positive"]) for row in train}
    corpus_families = {text_family(text) for text in corpus.values()}
    assert {family(d.removeprefix("d-").split(":")[0]) for d in corpus} == corpus_families
    assert not families["test"] & families["dev"]
    assert not families["train"] & (families["test"] | families["dev"] | corpus_families)
    assert not {row["positive"] for row in train} & set(corpus.values())

    texts = {split: {norm(queries[q]) for q, _ in qrels(built.beir / "qrels" / f"{split}.tsv")} for split in ("test", "dev")}
    texts["train"] = {norm(row["query"]) for row in train}
    assert len(texts["train"]) == len(train)  # no summary asked twice
    assert not texts["test"] & texts["dev"] and not texts["train"] & (texts["test"] | texts["dev"])
    corpus_blob = "\n\x00\n".join(norm(text) for text in corpus.values())
    assert not [q for q in texts["test"] | texts["dev"] if q in corpus_blob]
    assert not [row["query"] for row in train if norm(row["query"]) in norm(row["positive"])]


def test_documents_are_multi_facet(built):
    """Each document holds several members, so several queries (across all splits) point at it."""
    corpus = {row["_id"]: row["text"] for row in rows(built.beir / "corpus.jsonl")}
    test_pairs = qrels(built.beir / "qrels" / "test.tsv")
    per_document = Counter(d for q, d in test_pairs + qrels(built.beir / "qrels" / "dev.tsv"))
    test_documents = {d for _, d in test_pairs}
    multi = sum(per_document[d] >= 2 for d in test_documents)
    assert multi / len(test_documents) > 0.6, (multi, len(test_documents))
    assert len(test_pairs) / len(test_documents) > 2.5
    train_per_positive = Counter(row["positive"] for row in rows(built.train_jsonl))
    assert sum(n >= 2 for n in train_per_positive.values()) / len(train_per_positive) > 0.6
    member_lines = sorted(len(text.splitlines()) for text in corpus.values())
    assert member_lines[len(member_lines) // 2] >= 4  # a header and three members or more, at the median
    assert max(len(text.split()) for text in corpus.values()) < 450


def test_same_seed_same_files_other_seed_other_split(built, walk, tmp_path):
    members, counts = walk
    assert counts["modules_failed"] < counts["modules_walked"] / 10
    again = build_pydocs_retrieval_set(tmp_path / "again", seed=0, members=members, **SMALL)  # a second walk, same result
    for name in FILES:
        assert (built.root / name).read_bytes() == (again.root / name).read_bytes(), name
    other = build_pydocs_retrieval_set(tmp_path / "other", seed=1, members=members, **SMALL)
    assert (built.root / "beir/qrels/test.tsv").read_bytes() != (other.root / "beir/qrels/test.tsv").read_bytes()


def test_shortfall_is_recorded_and_too_little_data_raises(walk, tmp_path):
    members = [m for m in walk[0] if m.module.split(".")[0] in ("json", "csv", "shutil", "heapq", "tarfile")]
    paths = build_pydocs_retrieval_set(tmp_path / "few", members=members)
    stats = json.loads(paths.stats.read_text())
    assert stats["test_queries"] + stats["dev_queries"] > 20 and stats["shortfall"]["test"] > 1900
    assert len(load_beir(paths.beir, "test").qrels) == stats["test_queries"]
    with pytest.raises(RuntimeError, match="too few"):
        build_pydocs_retrieval_set(tmp_path / "none", members=members[:3])


FAKE_SOURCE = '''
"""A fake module for the selection tests.

Its docstring has a body too, so the module itself is a member of its first document.
"""
import functools, json

dumps = json.dumps  # a re-export: json's member, not this module's

def documented(a, b=1):
    """Add two numbers together quickly.

    The body explains that the result is the sum of a and b, returned as an int."""

def no_body():
    """Return the answer to everything in the universe."""

def two_words():
    """Add numbers.

    The summary is too short although this body has more than enough words in it."""

def _private():
    """A private helper with a summary.

    And a body that would be long enough if the helper were public at all."""

def c_style():
    """c_style(x) -> y

    Convert the thing into another thing. The second sentence of the paragraph is part of the body,
    and so is the rest."""

@functools.total_ordering
class Thing:
    """A thing that can be compared with others.

    Things are ordered by their weight; equal weights make equal things in every case."""

    def __init__(self, weight):
        """Create a thing of the given weight.

        The weight must be a number; it is stored as given and never changed."""

    def method(self, x):
        """Scale the thing by a factor.

        The factor x multiplies the weight, and the new thing is returned to the caller."""

    def _hidden(self):
        """Hidden method with a summary.

        Its body is long enough but the name is private so it is never used."""

    def __lt__(self, other):
        return True

    def __eq__(self, other):
        return True
'''


def fake_module(name: str = "fakemod", all_names: list[str] | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(FAKE_SOURCE, f"<{name}>", "exec"), vars(module))
    if all_names is not None:
        module.__all__ = all_names
    return module


def test_member_selection_needs_a_summary_and_a_body():
    members = module_members(fake_module())
    by_name = {m.qualname: m for m in members}
    # no_body (summary only), two_words (short summary), _private, _hidden, the json re-export and the
    # comparison methods total_ordering injected (its docstrings have a body, but they come from functools) are out.
    assert list(by_name) == ["", "documented", "c_style", "Thing", "Thing.__init__", "Thing.method"]
    assert all(isinstance(m, Member) and m.module == "fakemod" for m in members)
    assert by_name[""].kind == "module" and by_name[""].summary == "A fake module for the selection tests."
    documented = by_name["documented"]
    assert documented.summary == "Add two numbers together quickly."
    assert documented.line == "documented(a, b=1): The body explains that the result is the sum of a and b, returned as an int."
    assert by_name["c_style"].summary == "Convert the thing into another thing."
    assert by_name["c_style"].body.startswith("The second sentence of the paragraph is part of the body")
    assert by_name["Thing.method"].line.startswith("Thing.method(x): The factor x")
    assert by_name["Thing"].line.startswith("class Thing(weight): Things are ordered")
    assert all(norm(m.summary) not in norm(m.line) for m in members)
    assert [m.qualname for m in module_members(fake_module("fakeall", ["documented", "no_body"]))] == ["", "documented"]
    assert module_members(fake_module(), min_body_words=100) == []


def test_split_docstring():
    assert split_docstring("Summary only.", "f") == ("Summary only.", "")
    assert split_docstring("f(a, b) -> int\n  more signature\n\nDo it now. Then more.\n\nLast part.", "f") == (
        "Do it now.", "Then more. Last part.")
    assert split_docstring("Wrapped summary that goes\non the next line.\n\nBody.", "g") == (
        "Wrapped summary that goes on the next line.", "Body.")


def test_package_docs_training_pairs_from_installed_packages(tmp_path):
    """Pairs from click's and PyYAML's docstrings: same-family negatives, excluded queries and families left out,
    missing packages named, the summary never inside its own document."""
    probe = build_package_docs_training(tmp_path / "all", ["click", "yaml"])
    asked = [row["query"] for row in rows(probe.train_jsonl)]
    excluded = asked[:3]
    paths = build_package_docs_training(tmp_path / "out", ["click", "yaml", "no_such_package_xyz"],
                                        exclude_queries=[q.upper() + "  " for q in excluded])
    stats = json.loads(paths.stats.read_text())
    assert stats["packages"] == ["click", "yaml"] and stats["packages_missing"] == ["no_such_package_xyz"]
    train = rows(paths.train_jsonl)
    assert len(train) == stats["train_queries"] == len(asked) - 3 and stats["excluded_queries_found"] == 3
    assert not {norm(q) for q in excluded} & {norm(row["query"]) for row in train}
    assert set(stats["train_queries_per_family"]) == {"click", "yaml"} and sum(stats["train_queries_per_family"].values()) == len(train)
    for row in train:
        assert text_family(row["positive"]) in ("click", "yaml")
        assert norm(row["query"]) not in norm(row["positive"])
        assert len(row["negatives"]) == 1 and row["negatives"][0] != row["positive"]
        assert text_family(row["negatives"][0]) == text_family(row["positive"])  # both packages have several documents
    without_yaml = rows(build_package_docs_training(tmp_path / "click", ["click", "yaml"], exclude_families=["yaml"]).train_jsonl)
    assert {text_family(row["positive"]) for row in without_yaml} == {"click"}
    with pytest.raises(ModuleNotFoundError, match="no_such_package_xyz"):
        build_package_docs_training(tmp_path / "none", ["no_such_package_xyz"])


def test_dense_documents_hold_more_shorter_members(built, walk, tmp_path):
    """DENSE cuts each member's body to 16 words and packs up to 16 members a document: more facets per document,
    each line short, the same queries' hygiene (no query verbatim in any document)."""
    dense = build_pydocs_retrieval_set(tmp_path / "dense", seed=0, members=walk[0], **SMALL, **DENSE)
    stats, default_stats = json.loads(dense.stats.read_text()), json.loads(built.stats.read_text())
    assert stats["max_body_words"] == 16 and default_stats["max_body_words"] is None
    assert stats["avg_members_per_corpus_document"] > 1.4 * default_stats["avg_members_per_corpus_document"]
    corpus = [row["text"] for row in rows(dense.beir / "corpus.jsonl")]

    def mean_line_words(texts: list[str]) -> float:
        lines = [line for text in texts for line in text.splitlines()[1:]]
        return sum(len(line.split()) for line in lines) / len(lines)

    assert mean_line_words(corpus) < 0.7 * mean_line_words([row["text"] for row in rows(built.beir / "corpus.jsonl")])
    assert max(len(text.splitlines()) for text in corpus) > 10
    long_body = Member("m", "f", "function", "(x)", "Do a thing.", " ".join(f"w{i}" for i in range(30)))
    assert shortened(long_body, 16).body == " ".join(f"w{i}" for i in range(16)) + " ..."
    assert shortened(long_body, 30) is long_body
    texts = [norm(text) for text in corpus]
    queries = rows(dense.beir / "queries.jsonl")
    assert not any(norm(q["text"]) in text for q in queries[:200] for text in texts)
