"""A real, multi-facet text retrieval set built from the Python standard library's own docstrings.

The docstrings of the interpreter running this code are text nobody in this project wrote, far from Debian
package descriptions: a cross-domain test set (and optional training data) needing no download. Deterministic
for a given ``seed`` and Python version. Choices:

- The walk imports the public stdlib modules (``sys.stdlib_module_names`` sorted, recursing into packages) in a
  bare child of this interpreter (``-S -s -P -B``, ``PYTHONHASHSEED=0``, empty cwd, no stdin): site-packages cannot
  shadow a module, import side effects stay out of the caller, set reprs are stable. Skipped: private names,
  ``test``/``__main__`` submodules, ``SKIP_MODULES``. A failed import (other platforms) is counted, not fatal.
- Members, in definition order: the module's own docstring; public (``__all__``, else no ``_``) functions and
  classes whose ``__module__`` is the module or its ``_module`` accelerator; public and dunder methods a class
  defines itself (not injected ones, e.g. by ``total_ordering``). The *own* ``__doc__`` is read, not
  ``inspect.getdoc``'s inherited one; leading C-style ``name(...) -> x`` lines are dropped. Summary = first
  sentence of the first paragraph (3-40 words); body = the rest, >= 8 words, cut to 60. No body: not used.
  Signatures lose memory addresses and the local ``sys.executable`` path (reproducible across machines).
- Documents: one module's members as ``qualname(signature): body`` lines under the module name (or its
  docstring's ``module: body`` line), at most 6 members / 280 words; a class starts a new document once the
  current one has 2 members and 150 words; a lone trailing member joins the previous one. The summary (the
  query) is not in the document, and a document answers several queries about different members. ``DENSE``
  packs more facets into a document: bodies cut to 16 words, up to 16 members / 300 words a document.
- A summary occurring twice (lower-cased, whitespace-normalised: ``ntpath``/``posixpath`` twins) or verbatim in
  any document is not asked (its member stays in the document); documents left without a query are dropped.
- Split by family (``email.mime.text`` -> ``email``), shuffled with ``seed``: test families until
  ``num_test_queries``, dev until ``num_dev_queries`` (queries past these counts are not asked; their documents
  stay in the corpus), then distractor families while the corpus stays within ``corpus_size`` documents
  (default: no limit, hence no train split), the rest train. Fewer queries than asked for: all are used and
  ``stats.json`` records the ``shortfall``. CPython 3.11.7 gives 2,241 queries on 604 documents: the
  default 2000 test queries (533 documents) leave 241 for dev and nothing for distractors or train.
- :func:`build_package_docs_training` makes training pairs the same way from installed third-party packages
  (numpy, sympy, pandas, ...): ten times the stdlib's train split, from other families by construction.
- Output as :mod:`metaembed.data.debian`: ``beir/`` (corpus, queries, qrels/test.tsv, qrels/dev.tsv),
  ``train.jsonl`` / ``dev.jsonl`` rows ``{"query", "positive", "negatives"}`` whose negative is another document
  of the same module, else family, else any; and ``stats.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import pkgutil
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

# Importing these prints, opens a browser or a window, touches the terminal, writes caches (lib2to3) or is
# swapped for setuptools' copy (distutils); pydoc_data and test hold no API.
SKIP_MODULES = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "distutils",
                          "readline", "rlcompleter", "pydoc_data", "test"})
_SKIP_PARTS = ("test", "tests", "idle_test", "__main__")
_CHILD_CODE = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_metaembed_pydocs_walk', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)\n"
    "module._walk_to_file(sys.argv[2], sys.argv[3:])\n"
)


DENSE = {"max_members": 16, "max_words": 300, "max_body_words": 16}
"""Document bounds for more facets per document: on CPython 3.11 6.9 members per corpus document against the
default's 4.4 (modules with few members bound it), 123 words on average, within MiniLM's 448 text tokens."""


@dataclass(frozen=True)
class Member:
    """One documented module, function, class or method: its summary is a query, its body part of a document."""

    module: str
    qualname: str  # "" for the module's own docstring
    kind: str  # "module", "function", "class" or "method"
    signature: str
    summary: str
    body: str

    @property
    def key(self) -> str:
        return f"{self.module}:{self.qualname}" if self.qualname else self.module

    @property
    def line(self) -> str:
        return f"{'class ' if self.kind == 'class' else ''}{self.qualname or self.module}{self.signature}: {self.body}"


@dataclass(frozen=True)
class PydocsRetrievalPaths:
    """Where :func:`build_pydocs_retrieval_set` wrote everything."""

    root: Path
    beir: Path
    train_jsonl: Path
    dev_jsonl: Path
    stats: Path


@dataclass
class _Document:
    id: str
    module: str
    members: list[Member]
    text: str
    queries: list[Member]

    @property
    def family(self) -> str:
        return self.module.split(".")[0]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ------------------------------------------------------------------------------------------ members
def split_docstring(doc: str, name: str) -> tuple[str, str]:
    """(summary, body) of a cleaned docstring: leading ``name(...)`` signature lines (and their indented
    continuations) are dropped; the summary is the first sentence of the first paragraph, the body the rest."""
    lines = doc.strip().splitlines()
    signature = re.compile(rf"(\w+\.)*{re.escape(name)}\(")
    while lines and (signature.match(lines[0]) or (lines[0][:1].isspace() and lines[0].strip())):
        lines.pop(0)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
    if not paragraphs:
        return "", ""
    first, *rest = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9`'\"(\[])", paragraphs[0], maxsplit=1)
    return first, " ".join(rest + paragraphs[1:])


def _signature(obj: object, drop_first: bool) -> str:
    try:
        signature = inspect.signature(obj)
    except Exception:  # no signature, or evaluating a default failed (curses: _curses.ACS_* before initscr)
        return "(...)"
    if drop_first and signature.parameters and next(iter(signature.parameters)) in ("self", "cls"):
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(signature))  # object reprs: no memory addresses
    text = text.replace(repr(sys.executable), "sys.executable")  # platform.architecture's default: no local path
    return text if len(text) <= 100 else "(...)"


def _member(module: str, qualname: str, kind: str, obj: object, options: tuple[int, int, int]) -> Member | None:
    min_summary_words, min_body_words, max_body_words = options
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    summary, body = split_docstring(inspect.cleandoc(doc), (qualname or module).rsplit(".", 1)[-1])
    words = body.split()
    if not min_summary_words <= len(summary.split()) <= 40 or len(words) < min_body_words:
        return None
    body = " ".join(words[:max_body_words]) + (" ..." if len(words) > max_body_words else "")
    return Member(module, qualname, kind, "" if kind == "module" else _signature(obj, kind == "method"), summary, body)


def _is_public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__") and len(name) > 4)


def module_members(module: ModuleType, *, min_summary_words: int = 3, min_body_words: int = 8,
                   max_body_words: int = 60) -> list[Member]:
    """The usable members of ``module`` in definition order, its own docstring first (see the module docstring)."""
    name = module.__name__
    owners = {name, "_" + name}
    namespace = vars(module)
    public = namespace.get("__all__")
    keep = set(public) if isinstance(public, (list, tuple)) else None
    options = (min_summary_words, min_body_words, max_body_words)
    found = [_member(name, "", "module", module, options)]
    for attr, obj in list(namespace.items()):
        if ((attr not in keep) if keep is not None else attr.startswith("_")) or getattr(obj, "__module__", None) not in owners:
            continue
        if inspect.isroutine(obj):
            found.append(_member(name, attr, "function", obj, options))
        elif inspect.isclass(obj):
            found.append(_member(name, attr, "class", obj, options))
            for method_name, method in list(vars(obj).items()):
                method = method.__func__ if isinstance(method, (staticmethod, classmethod)) else method
                # C methods have no __module__; a Python one from another module was injected (total_ordering).
                own = getattr(method, "__module__", None) in owners | {None}
                if _is_public(method_name) and inspect.isroutine(method) and own:
                    found.append(_member(name, f"{attr}.{method_name}", "method", method, options))
    return [member for member in found if member is not None]


def walk_stdlib() -> tuple[list[Member], dict[str, object]]:
    """Import the stdlib modules in *this* process and collect their usable members (the child runs it)."""
    return walk_modules(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in SKIP_MODULES)


def walk_modules(top_level: Iterable[str]) -> tuple[list[Member], dict[str, object]]:
    """Import ``top_level`` modules and their public submodules in *this* process; their usable members."""
    pending = sorted(set(top_level), reverse=True)
    members: list[Member] = []
    walked, failed = 0, []
    while pending:
        name = pending.pop()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
                members += module_members(module)
            except (Exception, SystemExit):  # ImportError on other platforms, anything a module raises
                failed.append(name)
                continue
        walked += 1
        if hasattr(module, "__path__"):
            children = (info.name for info in pkgutil.iter_modules(module.__path__))
            children = (c for c in children if not c.startswith(("_", "test_")) and c not in _SKIP_PARTS)
            pending += sorted((f"{name}.{c}" for c in children), reverse=True)
    return members, {"modules_walked": walked, "modules_failed": len(failed), "failed_modules": failed}


def _walk_to_file(path: str, packages: list[str]) -> None:
    members, counts = walk_modules(packages) if packages else walk_stdlib()
    Path(path).write_text(json.dumps({"members": [asdict(m) for m in members], **counts}), encoding="utf-8")


def walk_stdlib_in_child(timeout: float = 900) -> tuple[list[Member], dict[str, object]]:
    """:func:`walk_stdlib` in a bare child of this interpreter (``-S``: no site-packages; hash seed 0)."""
    return _walk_in_child([], ["-S", "-s"], timeout)


def walk_packages_in_child(packages: Sequence[str], timeout: float = 1800) -> tuple[list[Member], dict[str, object]]:
    """:func:`walk_modules` over installed ``packages`` in a child of this interpreter (its site-packages; hash seed 0)."""
    if not packages:
        raise ValueError("walk_packages_in_child needs at least one package name")
    return _walk_in_child(list(packages), [], timeout)


def _walk_in_child(packages: list[str], flags: list[str], timeout: float) -> tuple[list[Member], dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "members.json"
        done = subprocess.run([sys.executable, *flags, "-P", "-B", "-c", _CHILD_CODE, __file__, str(out), *packages],
                              cwd=scratch, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if done.returncode != 0 or not out.is_file():
            what = "the package walk" if packages else "the stdlib walk"
            raise RuntimeError(f"{what} failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
        data = json.loads(out.read_text(encoding="utf-8"))
    return [Member(**m) for m in data.pop("members")], data


# ------------------------------------------------------------------------------------------ documents
def chunk_members(members: list[Member], max_members: int = 6, max_words: int = 280, min_words: int = 150) -> list[list[Member]]:
    """Consecutive members of one module -> documents (see the module docstring)."""
    chunks: list[list[Member]] = []
    current: list[Member] = []
    group = lambda m: m.qualname.split(".")[0] if m.kind in ("class", "method") else ""  # noqa: E731
    for member in members:
        words = sum(len(m.line.split()) for m in current)
        if current and (len(current) >= max_members or words + len(member.line.split()) > max_words
                        or (group(member) != group(current[-1]) and len(current) >= 2 and words >= min_words)):
            chunks.append(current)
            current = []
        current.append(member)
    if current:
        chunks[-1:] = [chunks[-1] + current] if len(current) == 1 and chunks else chunks[-1:] + [current]
    return chunks


def shortened(member: Member, max_body_words: int) -> Member:
    """The member with its body cut to ``max_body_words`` words (dense documents: more members in the same length)."""
    words = member.body.split()
    if len(words) <= max_body_words:
        return member
    return replace(member, body=" ".join(words[:max_body_words]) + " ...")


def _documents(members: list[Member], max_members: int = 6, max_words: int = 280,
               max_body_words: int | None = None) -> tuple[list[_Document], dict[str, int]]:
    summaries = Counter(_norm(m.summary) for m in members)
    by_module: dict[str, list[Member]] = defaultdict(list)
    for member in members:
        by_module[member.module].append(shortened(member, max_body_words) if max_body_words else member)
    documents = []
    chunked = ((module, chunk_members(group, max_members=max_members, max_words=max_words))
               for module, group in by_module.items())
    for module, chunks in chunked:
        for n, chunk in enumerate(chunks):
            text = "\n".join(([] if chunk[0].kind == "module" else [module]) + [m.line for m in chunk])
            queries = [m for m in chunk if summaries[_norm(m.summary)] == 1]
            documents.append(_Document(f"d-{module}:{n}", module, chunk, text, queries))
    # Drop summaries found verbatim in a document. A summary's inner words are whole words of any document that
    # contains it, so a word index narrows the substring search to a few candidates.
    texts = [_norm(d.text) for d in documents]
    index: dict[str, set[int]] = defaultdict(set)
    for i, text in enumerate(texts):
        for word in set(re.findall(r"\w+", text)):
            index[word].add(i)
    in_text = 0
    for document in documents:
        for member in list(document.queries):
            key = _norm(member.summary)
            inner = re.findall(r"\w+", key)[1:-1]
            if any(key in texts[i] for i in (set.intersection(*(index[w] for w in inner)) if inner else range(len(texts)))):
                document.queries.remove(member)
                in_text += 1
    kept = [d for d in documents if d.queries]
    return kept, {"members_usable": len(members), "ambiguous_summary_members": sum(n for n in summaries.values() if n > 1),
                  "summaries_found_in_a_document": in_text, "documents_without_query_dropped": len(documents) - len(kept)}


# ------------------------------------------------------------------------------------------ building
def training_rows(pairs: list[tuple[Member, _Document]], pool: list[_Document], rng: random.Random) -> Iterator[dict]:
    """``{"query", "positive", "negatives"}`` rows; the negative is another document of the same module, else of
    the same family, else any document of ``pool``."""
    by_module, by_fam = defaultdict(list), defaultdict(list)
    for d in pool:
        by_module[d.module].append(d)
        by_fam[d.family].append(d)
    for member, document in pairs:
        for options in (by_module[document.module], by_fam[document.family], pool):
            negatives = [d for d in options if d is not document]
            if negatives:
                break
        negative = [rng.choice(negatives).text] if negatives else []
        yield {"query": member.summary, "positive": document.text, "negatives": negative}


def build_pydocs_retrieval_set(
    out_dir: str | Path, seed: int = 0, *, num_test_queries: int = 2000, num_dev_queries: int = 500,
    corpus_size: int | None = None, members: list[Member] | None = None, max_members: int = 6, max_words: int = 280,
    max_body_words: int | None = None,
) -> PydocsRetrievalPaths:
    """Build the stdlib summary -> multi-member passage set in ``out_dir`` (see the module docstring).

    ``corpus_size`` caps the corpus so that the remaining families become train data (default: no train split).
    ``members`` (from :func:`walk_stdlib_in_child`) skips the walk, e.g. to build several seeds from one walk.
    ``max_members`` / ``max_words`` bound a document; ``max_body_words`` cuts each member's body first, so that
    a document of the same length holds more members (:data:`DENSE`).
    """
    from metaembed.data.debian import _write_jsonl  # not at the top: the walk child runs this file without site-packages

    out_dir = Path(out_dir)
    walk: dict[str, object] = {}
    if members is None:
        members, walk = walk_stdlib_in_child()
    documents, counts = _documents(members, max_members, max_words, max_body_words)
    if sum(len(d.queries) for d in documents) < 20:
        raise RuntimeError(f"only {len(documents)} documents with a query in this Python's stdlib: too few for a retrieval set")
    by_family: dict[str, list[_Document]] = defaultdict(list)
    for document in documents:
        by_family[document.family].append(document)
    families = sorted(by_family)
    random.Random(seed).shuffle(families)

    split_docs: dict[str, list[_Document]] = {"test": [], "dev": [], "distractor": [], "train": []}
    wanted = {"test": num_test_queries, "dev": num_dev_queries}
    for family in families:
        docs = by_family[family]
        split = next((s for s in wanted if sum(len(d.queries) for d in split_docs[s]) < wanted[s]), None)
        if split is None:
            in_corpus = sum(len(split_docs[s]) for s in ("test", "dev", "distractor"))
            split = "distractor" if corpus_size is None or in_corpus + len(docs) <= corpus_size else "train"
        split_docs[split] += docs
    asked = {s: [(m, d) for d in split_docs[s] for m in d.queries][:n] for s, n in wanted.items()}
    corpus = sorted(split_docs["test"] + split_docs["dev"] + split_docs["distractor"], key=lambda d: d.id)

    beir = out_dir / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    _write_jsonl(beir / "corpus.jsonl", ({"_id": d.id, "title": "", "text": d.text} for d in corpus))
    _write_jsonl(beir / "queries.jsonl", ({"_id": f"q-{m.key}", "text": m.summary} for s in asked for m, _ in asked[s]))
    for split, pairs in asked.items():
        with (beir / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"q-{m.key}\t{d.id}\t1\n" for m, d in pairs)

    rng = random.Random(seed + 1)
    train_pairs = [(m, d) for d in split_docs["train"] for m in d.queries]
    train_jsonl, dev_jsonl = out_dir / "train.jsonl", out_dir / "dev.jsonl"
    _write_jsonl(train_jsonl, training_rows(train_pairs, split_docs["train"], rng))
    _write_jsonl(dev_jsonl, training_rows(asked["dev"], split_docs["dev"] + split_docs["distractor"], rng))

    test_docs = {d.id for _, d in asked["test"]}
    stats = {
        "python": sys.version.split()[0], "implementation": sys.implementation.name, "seed": seed, **walk, **counts,
        "max_members": max_members, "max_words": max_words, "max_body_words": max_body_words,
        "documents": len(documents), "families": len(families),
        "families_per_split": {s: len({d.family for d in docs}) for s, docs in split_docs.items()},
        "documents_per_split": {s: len(docs) for s, docs in split_docs.items()},
        "test_queries": len(asked["test"]), "dev_queries": len(asked["dev"]), "train_queries": len(train_pairs),
        "test_documents_with_queries": len(test_docs), "corpus_documents": len(corpus),
        "avg_words_per_corpus_document": round(sum(len(d.text.split()) for d in corpus) / len(corpus), 1),
        "avg_members_per_corpus_document": round(sum(len(d.members) for d in corpus) / len(corpus), 2),
        "avg_test_queries_per_test_document": round(len(asked["test"]) / max(1, len(test_docs)), 2),
        "shortfall": {s: n - len(asked[s]) for s, n in wanted.items() if len(asked[s]) < n},
    }
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return PydocsRetrievalPaths(root=out_dir, beir=beir, train_jsonl=train_jsonl, dev_jsonl=dev_jsonl, stats=stats_path)


DEFAULT_TRAINING_PACKAGES = ("numpy", "matplotlib", "PIL", "pandas", "networkx", "sympy", "pyarrow", "datasets",
                             "sklearn", "skimage", "pydantic", "jinja2", "rich", "click", "requests", "qdrant_client")
"""Third-party packages (installed with metaembed or its test extras) whose docstrings make extra training pairs."""


@dataclass(frozen=True)
class PackageDocsPaths:
    """Where :func:`build_package_docs_training` wrote everything."""

    root: Path
    train_jsonl: Path
    stats: Path


def build_package_docs_training(
    out_dir: str | Path, packages: Sequence[str] = DEFAULT_TRAINING_PACKAGES, seed: int = 0, *,
    exclude_queries: Iterable[str] = (), exclude_families: Iterable[str] = (),
) -> PackageDocsPaths:
    """Training pairs (``train.jsonl``, as the stdlib set's) from the docstrings of installed third-party
    ``packages``: the same members, documents and filters, every family (top-level package) a training family.

    More and more varied pairs than the stdlib's train split (~10,000 queries from the default packages, against
    1,028), from code nobody here wrote. Packages not installed are skipped and named in ``stats.json``.
    ``exclude_queries`` (e.g. the test and dev queries of the set it trains for) are never asked, compared
    lower-cased and whitespace-normalised; ``exclude_families`` (top-level names, e.g. the stdlib test families a
    package vendors) are dropped whole.
    """
    from metaembed.data.debian import _write_jsonl  # not at the top: the walk child runs this file without site-packages

    out_dir = Path(out_dir)
    installed = [p for p in packages if importlib.util.find_spec(p) is not None]
    if not installed:
        raise ModuleNotFoundError(f"none of the packages {', '.join(packages)} is installed: no docstrings to read")
    members, walk = walk_packages_in_child(installed)
    excluded_families = set(exclude_families)
    members = [m for m in members if m.module.split(".")[0] not in excluded_families]
    documents, counts = _documents(members)
    excluded = {_norm(q) for q in exclude_queries}
    pairs = [(m, d) for d in documents for m in d.queries if _norm(m.summary) not in excluded]
    if not pairs:
        raise RuntimeError(f"no usable docstring summaries in {', '.join(installed)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    train_jsonl = out_dir / "train.jsonl"
    _write_jsonl(train_jsonl, training_rows(pairs, documents, random.Random(seed + 1)))
    per_family = Counter(d.family for _, d in pairs)
    stats = {"python": sys.version.split()[0], "seed": seed, "packages": installed,
             "packages_missing": [p for p in packages if p not in installed], **walk, **counts,
             "documents": len(documents), "train_queries": len(pairs),
             "excluded_queries_found": sum(len(d.queries) for d in documents) - len(pairs),
             "train_queries_per_family": dict(sorted(per_family.items()))}
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return PackageDocsPaths(root=out_dir, train_jsonl=train_jsonl, stats=stats_path)


def main(argv: list[str] | None = None) -> None:
    """``python -m metaembed.data.pydocs OUT_DIR``: build the set, print its stats and the build time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m metaembed.data.pydocs")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-queries", type=int, default=2000)
    parser.add_argument("--dev-queries", type=int, default=500)
    parser.add_argument("--corpus-size", type=int, default=None, help="corpus documents; the other families are train data")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = build_pydocs_retrieval_set(args.out_dir, args.seed, num_test_queries=args.test_queries,
                                       num_dev_queries=args.dev_queries, corpus_size=args.corpus_size)
    print(json.dumps(json.loads(paths.stats.read_text()), indent=2))
    print(f"built in {time.perf_counter() - start:.1f} s\nBEIR folder: {paths.beir}")
    print(f"training JSONL: {paths.train_jsonl}\ndev JSONL: {paths.dev_jsonl}")


if __name__ == "__main__":
    main()
