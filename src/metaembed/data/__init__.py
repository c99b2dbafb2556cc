"""Data: the Debian retrieval set builder and readers for BEIR, MMEB-eval and ViDoRe layouts."""

from metaembed.data.beir import DataFormatError, load_beir
from metaembed.data.detect import detect_format, load_tasks
from metaembed.data.mmeb import load_mmeb_subset
from metaembed.data.tasks import CandidateTask, DataIssues, EvalItem, RetrievalTask
from metaembed.data.vidore import load_vidore, load_vidore_beir, load_vidore_qa

__all__ = [
    "CandidateTask", "DataFormatError", "DataIssues", "DebianDataError", "EvalItem", "RetrievalTask",
    "build_debian_retrieval_set", "detect_format", "load_beir", "load_mmeb_subset", "load_tasks", "load_vidore",
    "load_vidore_beir", "load_vidore_qa",
]


def __getattr__(name: str):
    # The Debian builder is imported lazily so `python -m metaembed.data.debian` runs without a double import.
    if name in ("DebianDataError", "build_debian_retrieval_set"):
        from metaembed.data import debian

        return getattr(debian, name)
    raise AttributeError(f"module 'metaembed.data' has no attribute {name!r}")
