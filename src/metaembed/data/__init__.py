"""Data: the one :class:`Item` type, readers for BEIR, MMEB-eval and ViDoRe layouts, and the data set builders.

Names are imported on first use (PEP 562), so importing :mod:`metaembed.data.item` -- which every layer does --
costs no reader (nor pyarrow) that is not used."""

from typing import TYPE_CHECKING

from metaembed._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "CandidateTask": "metaembed.data.tasks",
    "DataFormatError": "metaembed.data.beir",
    "DataIssues": "metaembed.data.tasks",
    "DebianDataError": "metaembed.data.debian",
    "Item": "metaembed.data.item",
    "RetrievalTask": "metaembed.data.tasks",
    "build_debian_retrieval_set": "metaembed.data.debian",
    "detect_format": "metaembed.data.detect",
    "load_beir": "metaembed.data.beir",
    "load_mmeb_subset": "metaembed.data.mmeb",
    "load_tasks": "metaembed.data.detect",
    "load_vidore": "metaembed.data.vidore",
    "load_vidore_beir": "metaembed.data.vidore",
    "load_vidore_qa": "metaembed.data.vidore",
}
"""Each public name and the module it lives in."""

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from metaembed.data.beir import DataFormatError, load_beir
    from metaembed.data.debian import DebianDataError, build_debian_retrieval_set
    from metaembed.data.detect import detect_format, load_tasks
    from metaembed.data.item import Item
    from metaembed.data.mmeb import load_mmeb_subset
    from metaembed.data.tasks import CandidateTask, DataIssues, RetrievalTask
    from metaembed.data.vidore import load_vidore, load_vidore_beir, load_vidore_qa


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
