"""Application icons of Debian's icon themes, captioned with the Debian description of the application.

Freedesktop icon themes name an application's icon after the application: ``papirus-icon-theme`` has
``Papirus/64x64/apps/darktable.svg``, ``breeze-icon-theme`` has ``breeze/apps/48/kate.svg``. Where that name
is also a Debian package with a description (:mod:`metaembed.data.debian`'s apt lists), the icon gets the
package's summary as its caption ("virtual lighttable and darkroom for photographers"), the package name
as its document text, and the first paragraph of the long description, with the name masked ("this program
is a simple text editor..."), as its text -> image+text query.
Measured on bookworm: 1,072 Papirus names (897 distinct icon files: many names are links to one drawing)
and 199 Breeze names are packages. Adwaita is left out: its application icons are a handful of
monochrome "symbolic" glyphs, none named like a package.

Hard negatives come from the package's Debian section (another game for a game); icons reached through
links to one file, or named for one package in both themes, are one family (and the pixel deduplication
keeps one of identical drawings).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from metaembed.data.debian import APT_LISTS_DIR, find_translation_files, load_descriptions, load_sections
from metaembed.data.debian_sources import _cut_words
from metaembed.data.image_text import ImageTextItem

THEME_APP_FOLDERS = {
    "papirus-icon-theme": Path("usr/share/icons/Papirus/64x64/apps"),
    "breeze-icon-theme": Path("usr/share/icons/breeze/apps/48"),
}
"""Where each theme keeps its application icons (SVG), inside the unpacked package."""
MAX_QUERY_WORDS = 40


def mask_name(text: str, name: str) -> str:
    """``text`` with the package name (a whole word, any case) replaced by "this program": the image+text
    document's text is the name, so a query naming it would be found by the name alone."""
    masked = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "this program", text, flags=re.IGNORECASE)
    return masked[:1].upper() + masked[1:]


def icon_items(theme_roots: dict[str, str | Path], *, lists_dir: str | Path | None = None) -> tuple[list[ImageTextItem], Counter]:
    """Application icons of the unpacked themes in ``theme_roots`` (package name -> its ``/``) that are named
    like a described Debian package, as items in name order; plus counts."""
    lists = Path(lists_dir) if lists_dir is not None else APT_LISTS_DIR
    descriptions = {d.package: d for d in load_descriptions(find_translation_files(lists))}
    sections = load_sections(lists)
    counts: Counter = Counter()
    items: list[ImageTextItem] = []
    for theme, folder in sorted(THEME_APP_FOLDERS.items()):
        if theme not in theme_roots:
            continue
        icons = sorted((Path(theme_roots[theme]) / folder).glob("*.svg"))
        counts[f"{theme}_icons"] = len(icons)
        for path in icons:
            description = descriptions.get(path.stem)
            if description is None:
                counts["no_package"] += 1
                continue
            if not path.exists():  # a link whose drawing the package does not hold
                counts["broken_link"] += 1
                continue
            if len(description.summary.split()) < 2:
                counts["summary_too_short"] += 1
                continue
            first = mask_name(description.first_paragraph, path.stem)
            query = _cut_words(first, MAX_QUERY_WORDS) if len(first.split()) >= 4 else None
            counts["with_package"] += 1
            items.append(ImageTextItem(
                key=f"icons/{theme}/{path.stem}", source=path.resolve(), caption=description.summary,
                doc_text=f"{path.stem} (application icon)", query_text=query,
                category=f"icons/{sections.get(path.stem, 'misc')}",
                family_keys=(f"package:{path.stem}", f"icon-file:{path.resolve()}"),
            ))
    counts["items"] = len(items)
    return items, counts
