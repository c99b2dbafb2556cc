"""Issue 17 (hardening) for corpus reading: image-folder symlinks stay inside the folder, and bytes that are not
UTF-8 or an empty text are reported with the file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from metaembed.index.corpus import CorpusError, read_corpus
from metaembed.jsonl import NotUtf8Error, numbered_lines


@pytest.fixture
def pages(tmp_path: Path) -> Path:
    """pages/ holds a.png and doc/b.png; secret.png and passwd sit next to it, outside."""
    folder = tmp_path / "pages"
    (folder / "doc").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    Image.new("RGB", (8, 8)).save(folder / "doc" / "b.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return folder


def test_image_folder_symlink_inside_is_read(pages):
    os.symlink(pages / "doc" / "b.png", pages / "same.png")
    assert [r.id for r in read_corpus(pages)] == ["a.png", "doc/b.png", "same.png"]


@pytest.mark.parametrize("link", ["evil.png", "doc/evil.png"])
def test_image_folder_symlink_outside_is_refused(pages, link):
    os.symlink(pages.parent / "passwd", pages / link)
    with pytest.raises(CorpusError, match=rf"{pages / link}: image path '{link}' leads outside the data folder"):
        read_corpus(pages)
    records = read_corpus(pages, allow_outside_paths=True)
    assert link in [r.id for r in records]


def test_image_folder_symlinked_directory_outside_is_refused(pages, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere" / "c.png")
    os.symlink(tmp_path / "elsewhere", pages / "linked")
    ids = [r.id for r in read_corpus(pages)]  # pathlib does not walk into the symlinked folder ...
    assert not any(i.startswith("linked/") for i in ids)
    os.symlink(tmp_path / "elsewhere" / "c.png", pages / "doc" / "c.png")  # ... and a file link is checked
    with pytest.raises(CorpusError, match="leads outside"):
        read_corpus(pages)


def test_corpus_that_is_not_utf8_names_the_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "fine"}\n\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=rf"{corpus}, line 3: not valid UTF-8 \(byte 0xe9 at column 25\)"):
        read_corpus(corpus)
    with pytest.raises(NotUtf8Error, match="line 3"):  # every JSONL reader of the package gets the line
        list(numbered_lines(corpus))
    assert issubclass(NotUtf8Error, ValueError)


def test_lines_keep_universal_newlines(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes('{"id": "a", "text": "é"}\r\n{"id": "b", "text": "x"}\r\n'.encode())
    assert [r.id for r in read_corpus(corpus)] == ["a", "b"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": "a", "text": "ok"}\n{"id": "b", "text": ""}\n', r"line 2: 'text' of item 'b' is empty"),
    ('{"id": "a", "text": "ok"}\n{"id": "b", "text": "  \\n "}\n', r"line 2: 'text' of item 'b' is empty"),
    ('{"_id": "a", "title": " ", "text": ""}\n', r"line 1: BEIR document 'a' needs a non-empty string"),
    ('{"id": "\\ud800", "text": "x"}\n', r"line 1: 'id' '\\ud800' is not valid Unicode"),
])
def test_empty_text_or_bad_id_names_the_file_and_line(tmp_path, content, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(content)
    with pytest.raises(CorpusError, match=rf"{corpus}, {message}"):
        read_corpus(corpus)
