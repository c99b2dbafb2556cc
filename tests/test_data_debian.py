"""The Debian retrieval-set builder, on small synthetic Translation / Packages files written here
(the real apt lists may be absent in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaembed.data.beir import load_beir
from metaembed.data.debian import (
    DebianDataError,
    build_debian_retrieval_set,
    clean_descriptions,
    find_translation_files,
    parse_translation,
    read_list_file,
)

TOPICS = ["editor", "compressor", "database", "game", "font", "library", "shell", "browser", "player", "viewer"]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def stanza(package: str, summary: str, paragraphs: list[str]) -> str:
    body = "\n .\n".join("\n".join(" " + line for line in paragraph.split("\n")) for paragraph in paragraphs)
    return f"Package: {package}\nDescription-md5: {abs(hash((package, summary))):032x}\nDescription-en: {summary}\n{body}\n"


def synthetic_translation(count: int) -> str:
    """``count`` distinct packages; every fifth has a -dev sibling sharing its first paragraph (one family)."""
    stanzas = []
    for n in range(count):
        topic = TOPICS[n % len(TOPICS)]
        words = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(8))
        first = f"Package number {n} is a {topic} with {words} features for everyday use."
        stanzas.append(stanza(f"pkg{n}", f"{topic} number {n} {WORDS[n % 16]}", [first, f"It also supports mode {n} and extra {topic} plugins."]))
        if n % 5 == 0:
            stanzas.append(stanza(f"pkg{n}-dev", f"{topic} number {n} development files", [first, "This package contains the headers."]))
    return "\n".join(stanzas)


def synthetic_packages(count: int) -> str:
    return "\n".join(f"Package: pkg{n}\nVersion: 1.0\nSection: {'contrib/' if n % 7 == 0 else ''}{TOPICS[n % 3]}\n" for n in range(count))


def test_parse_translation_paragraphs_verbatim_lines_and_bad_stanzas(capsys):
    text = (
        "Package: zed\nDescription-md5: 0123\nDescription-en: A tiny editor\n"
        " First line of the first paragraph\n continues here.\n .\n Features:\n  * fast\n  * small\n\n"
        "Description-md5: 9999\nDescription-en: orphan stanza\n long text\n"
    )
    parsed = list(parse_translation(text, source="fixture.txt"))
    assert len(parsed) == 1
    zed = parsed[0]
    assert (zed.package, zed.md5, zed.summary) == ("zed", "0123", "A tiny editor")
    assert zed.passage == "First line of the first paragraph continues here.\n\nFeatures:\n* fast\n* small"
    assert zed.first_paragraph == "First line of the first paragraph continues here."
    assert "fixture.txt:11: stanza without Package or Description-en, skipped" in capsys.readouterr().err


def test_clean_descriptions_drops_short_and_duplicates():
    text = (
        stanza("a", "an editor for text", ["one two three four five six seven eight nine ten eleven twelve"])
        + "\n" + stanza("b", "another summary here", ["one two three four five six seven eight nine ten eleven twelve"])
        + "\n" + stanza("c", "an editor for text", ["a different passage that is long enough to keep in the set ok"])
        + "\n" + stanza("d", "short passage", ["too short"])
        + "\n" + stanza("e", "x", ["a single word summary is dropped even with a long enough passage here"])
    )
    kept, counts = clean_descriptions(parse_translation(text))
    assert [d.package for d in kept] == ["a"]
    assert counts == {"read": 5, "too_short": 2, "duplicate_passage": 1, "duplicate_summary": 1, "kept": 1}


@pytest.fixture()
def lists_dir(tmp_path) -> Path:
    import lz4.frame

    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "deb.example_dists_stable_main_i18n_Translation-en.lz4").write_bytes(lz4.frame.compress(synthetic_translation(300).encode()))
    (folder / "deb.example_dists_stable_main_binary-amd64_Packages").write_text(synthetic_packages(300))
    return folder


def test_build_writes_beir_and_training_jsonl_with_disjoint_family_splits(lists_dir, tmp_path):
    paths = build_debian_retrieval_set(tmp_path / "out", seed=3, num_test_queries=40, num_dev_queries=20, corpus_size=150, lists_dir=lists_dir)
    stats = json.loads(paths.stats.read_text())
    assert stats["read"] == 360 and stats["kept"] == 360 and stats["families"] == 300
    assert stats["test_queries"] == 40 and stats["dev_queries"] == 20 and stats["corpus_passages"] == 150
    assert stats["packages_with_section"] == 300

    task = load_beir(paths.beir, "test")
    assert len(task.qrels) == 40 and len(task.corpus) == 150 and not task.issues.counts
    dev = load_beir(paths.beir, "dev")
    assert len(dev.qrels) == 20 and not set(dev.qrels) & set(task.qrels)
    header = (paths.beir / "qrels" / "test.tsv").read_text().splitlines()[0]
    assert header == "query-id\tcorpus-id\tscore"
    query_id = next(iter(task.qrels))
    package = query_id.removeprefix("q-")
    assert task.qrels[query_id] == {f"d-{package}": 1}
    assert task.queries[query_id].text.split(" number ")[1].split()[0] == package.removeprefix("pkg").removesuffix("-dev")

    train = [json.loads(line) for line in paths.train_jsonl.read_text().splitlines()]
    assert len(train) == 360 - 150 == stats["train_examples"]
    assert all(set(row) == {"query", "positive", "negatives"} and len(row["negatives"]) == 1 for row in train)
    # No passage of the evaluation corpus is trained on, and families never straddle splits.
    corpus_texts = {item.text for item in task.corpus.values()}
    assert not corpus_texts & {row["positive"] for row in train}
    first_paragraphs = {text.split("\n\n")[0] for text in corpus_texts}
    assert not first_paragraphs & {row["positive"].split("\n\n")[0] for row in train}
    # The hard negative is another family's passage, from the same section when there is one.
    for row in train[:50]:
        assert row["negatives"][0].split("\n\n")[0] != row["positive"].split("\n\n")[0]
    dev_rows = [json.loads(line) for line in paths.dev_jsonl.read_text().splitlines()]
    assert len(dev_rows) == 20


def test_build_is_deterministic_per_seed(lists_dir, tmp_path):
    settings = dict(num_test_queries=30, num_dev_queries=10, corpus_size=80, lists_dir=lists_dir)
    one = build_debian_retrieval_set(tmp_path / "a", seed=0, **settings)
    two = build_debian_retrieval_set(tmp_path / "b", seed=0, **settings)
    other = build_debian_retrieval_set(tmp_path / "c", seed=1, **settings)
    for name in ("beir/corpus.jsonl", "beir/qrels/test.tsv", "train.jsonl"):
        assert (one.root / name).read_bytes() == (two.root / name).read_bytes()
    assert (one.root / "beir/qrels/test.tsv").read_bytes() != (other.root / "beir/qrels/test.tsv").read_bytes()


def test_missing_lists_say_how_to_get_them(tmp_path):
    with pytest.raises(DebianDataError, match=r"apt-get update -o Acquire::Languages=en"):
        find_translation_files(tmp_path, run_apt_update=False)
    with pytest.raises(DebianDataError, match="not enough"):
        build_debian_retrieval_set(tmp_path / "o", translation_files=[_write(tmp_path / "t", synthetic_translation(20))], lists_dir=tmp_path)


def test_reads_plain_gzip_and_lz4_lists(tmp_path):
    import gzip

    text = synthetic_translation(3)
    plain = _write(tmp_path / "Translation-en", text)
    gz = tmp_path / "Translation-en.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert read_list_file(plain) == read_list_file(gz) == text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
