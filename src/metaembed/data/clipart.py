"""Captions for the Open Clip Art Library drawings of Debian's ``openclipart-svg`` package.

The package holds 8,121 SVG drawings in category folders (``animals/mammals/dogs/bored_dog_01.svg``).
Each file's RDF metadata has a title (``dc:title``), sometimes a description (``dc:description``) and
keywords (``dc:subject``). Measured on the whole package (see the builder's stats): 99% have a title but
only ~2,700 distinct ones, because collections share one ("gramastar" x1,375, "Part of the Flat Icon
Collection" x876, "card" x226); 21% have a description, many of them junk ("HASH(0x862bbb8)", an e-mail
address, "EPS converted from http://aiga.org"); 99% have keywords, padded with generic tags ("hash",
"icons", the folder name). The PNG package (``openclipart-png``) has the same drawings with file names only,
and those are the title cut to 24 characters plus the author's cut name (``medicina_dottore_archite_01``):
of the 2,932 drawings with a title of their own, 1,964 (67%) have file names with words the title lacks
(author, cut words). Worse captions, five times the download. So captions come from the SVG metadata, with the file name only
where the title is a collection's:

- ``caption`` (text -> image queries, image -> text documents): the title when at most
  ``max_title_share`` files carry it, else the file name's words without numbers (``white_h_9`` -> "white
  h", every ``star_67pt11step`` -> "star"), kept only when it has two words of three letters or more
  ("line rect begin" is kept, "white c q", "irkick" and "star" are not).
- ``doc_text`` (the text of image+text documents): the caption and the category path.
- ``query_text`` (text -> image+text queries): the description when it is informative, else the keywords
  that are neither generic tags nor words of the document text (at least two), so the query is never a copy
  of the document's text.
- family keys: the folder plus the file name without numbers (``jigsaw_blue_05`` / ``jigsaw_blue_06``), and
  the title: variants of one drawing land in one split.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from metaembed.data.image_text import ImageTextItem, normalise_text

SVG_ROOT = Path("usr/share/openclipart/svg")
"""Where the drawings are inside the unpacked package."""
PACKAGE = "openclipart-svg"

_DC = "{http://purl.org/dc/elements/1.1/}"
_CC = "{http://web.resource.org/cc/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_CHUNK = 4096
GENERIC_TAGS = frozenset(
    "hash icon icons theme themes clipart clip art svg image picture drawing openclipart media special unsorted "
    "signs_and_symbols signs symbols shape shapes".split()
)


@dataclass(frozen=True)
class SvgMetadata:
    """The Creative Commons work record of one SVG file."""

    title: str
    description: str
    keywords: tuple[str, ...]


def read_svg_metadata(path: str | Path) -> SvgMetadata:
    """Title, description and keywords of the first ``cc:Work`` (parsing stops at its end; a file without one
    is read to the end).

    Raises ``xml.etree.ElementTree.ParseError`` (or OSError) for a file that is not readable XML."""
    title = description = ""
    keywords: list[str] = []
    in_work = False
    parser = ET.XMLPullParser(events=("start", "end"))
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):  # fed in small chunks: the metadata is near the top of the file
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start":
                    in_work = in_work or element.tag == _CC + "Work"
                    continue
                if element.tag == _CC + "Work":
                    return SvgMetadata(title, description, tuple(keywords))
                if not in_work:
                    continue
                text = " ".join((element.text or "").split())
                if element.tag == _DC + "description" and not description:
                    description = text
                elif element.tag == _RDF + "li" and text:
                    keywords.append(text)
                elif element.tag == _DC + "title" and not title and len(element) == 0:
                    title = text  # an Agent's title (creator, publisher) also ends here, but after the work's own
    parser.close()  # raises ParseError for a truncated file
    return SvgMetadata(title, description, tuple(keywords))


def _words(text: str) -> list[str]:
    """Words of a file name or tag: split at separators and camelCase, lower-cased."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return [word for word in re.split(r"[^0-9A-Za-z]+", text.lower()) if word]


def stem_caption(stem: str) -> str:
    """A file name's words without any word holding a digit (``star_67pt11step`` -> "star")."""
    return " ".join(word for word in _words(stem) if not any(ch.isdigit() for ch in word))


def clean_title(title: str) -> str:
    """A title as a caption: underscores as spaces and an author credit prefix removed ("Clipart by Tobias
    Jakobs - United States - US Virgin Islands" -> "United States - US Virgin Islands")."""
    title = re.sub(r"^\s*clip\s*art by [^-]{1,60}-\s*", "", title.replace("_", " "), flags=re.IGNORECASE)
    return " ".join(title.split())


def _informative_description(description: str, title: str, shared: int) -> bool:
    words = description.split()
    lowered = description.lower()
    return (
        len(words) >= 3 and shared <= 1 and normalise_text(description) != normalise_text(title)
        and "@" not in description and "http" not in lowered and not lowered.startswith("hash(")
    )


def clipart_items(package_root: str | Path, *, max_title_share: int = 2, progress: bool = False) -> tuple[list[ImageTextItem], Counter]:
    """Every drawing of an unpacked ``openclipart-svg`` (``package_root`` holds ``usr/share/...``) as an
    :class:`ImageTextItem`, in path order, and counts of what was read and skipped and why."""
    svg_root = Path(package_root) / SVG_ROOT
    files = sorted(svg_root.rglob("*.svg"))
    counts: Counter = Counter(files=len(files))
    records: list[tuple[Path, SvgMetadata]] = []
    for path in tqdm(files, desc="reading clip-art metadata", unit="file", disable=not progress):
        try:
            records.append((path, read_svg_metadata(path)))
        except (ET.ParseError, OSError, UnicodeDecodeError):
            counts["unreadable_svg"] += 1
    titles = Counter(normalise_text(meta.title) for _, meta in records if meta.title)
    descriptions = Counter(normalise_text(meta.description) for _, meta in records if meta.description)
    items: list[ImageTextItem] = []
    for path, meta in records:
        item = _item(path, svg_root, meta, titles, descriptions, max_title_share, counts)
        if item is not None:
            items.append(item)
    counts["items"] = len(items)
    return items, counts


def _item(path: Path, svg_root: Path, meta: SvgMetadata, titles: Counter, descriptions: Counter,
          max_title_share: int, counts: Counter) -> ImageTextItem | None:
    relative = path.relative_to(svg_root)
    folder = relative.parent.as_posix()
    title_key = normalise_text(meta.title)
    specific = bool(title_key) and titles[title_key] <= max_title_share and re.search(r"[a-z]{3}", title_key) is not None
    counts["title_specific" if specific else "title_missing" if not title_key else "title_shared"] += 1
    caption = clean_title(meta.title) if specific else stem_caption(path.stem)
    if not re.search(r"[a-z]{3}", normalise_text(caption)):
        counts["no_caption"] += 1
        return None
    if not specific and len(re.findall(r"\b[a-z]{3,}\b", caption)) < 2:
        counts["weak_file_name_caption"] += 1  # "white c q", "kde", "irkick": codes, not descriptions
        return None
    category_words = [word for part in relative.parent.parts for word in _words(part)]
    doc_text = f"{caption} ({', '.join(part.replace('_', ' ') for part in relative.parent.parts)})" if folder != "." else caption
    query_text = None
    if meta.description and _informative_description(meta.description, meta.title, descriptions[normalise_text(meta.description)]):
        query_text = meta.description
        counts["query_from_description"] += 1
    else:
        taken = set(_words(doc_text)) | set(category_words) | GENERIC_TAGS
        useful: list[str] = []
        for keyword in meta.keywords:
            words = _words(keyword)
            if words and not set(words) <= taken and " ".join(words) not in useful:
                useful.append(" ".join(words))
        if len(useful) >= 2:
            query_text = ", ".join(useful)
            counts["query_from_keywords"] += 1
    keys = [f"stem:{folder}/{stem_caption(path.stem) or path.stem}"]
    if specific:
        keys.append(f"title:{title_key}")
    return ImageTextItem(
        key=f"openclipart/{relative.with_suffix('').as_posix()}", source=path, caption=caption, doc_text=doc_text,
        query_text=query_text, category=folder, family_keys=tuple(keys),
    )

