"""The model card (README.md) that ``MetaEmbed.save_pretrained`` writes: what the model is, how to install, load and
search with it, its meta tokens and meta attention, the MMR groups it was trained with, the backbone it was built
from, the budget curve of an evaluation run when one is attached, and real example items as plain text.

Everything comes from the model in memory and its records (:class:`~metaembed.model.saved_config.TrainingRecord`,
:class:`BudgetCurve`), so a card can be written again at any time (``MetaEmbed.attach_budget_curve``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCardData
from sentence_transformers.base.modules import Dense

from metaembed.budgets import PAPER_BUDGETS, Budget, clip_budgets
from metaembed.model.saved_config import Item, TrainingRecord

if TYPE_CHECKING:
    from metaembed.model.metaembed import MetaEmbed

TAGS = ["metaembed", "multi-vector", "late-interaction", "matryoshka", "meta-tokens", "retrieval", "sentence-transformers"]
DEFAULT_QUERIES: list[str] = ["a red bicycle", "how do I compress a file on the command line?"]
DEFAULT_DOCUMENTS: list[str] = [
    "A red bicycle leans against a brick wall.",
    "gzip compresses files with Lempel-Ziv coding; gunzip restores them.",
]
MAX_EXAMPLE_CHARS = 200
PAPER = "MetaEmbed: Scaling Multimodal Retrieval at Test-Time with Flexible Late Interaction (Xiao et al., ICLR 2026)"
MEANINGS = {
    "full": "every meta token reads the whole item, as in the paper",
    "document_windows": "document vectors read nested windows (vector 1 the whole item, then halves, quarters, ...)",
    "windows": "query and document vectors read nested windows (vector 1 the whole item, then halves, quarters, ...)",
    "document_lines": "document vector 1 is the whole document, vector v >= 2 its line v - 1 (the lines again past the "
                      "last); queries as in the paper",
    "document_segments": "as document_lines, each line's tokens also read apart from the other lines",
    "document_regions": "document vector 1 is the whole item, vectors 2.. read regions of its image's feature grid "
                        "(quadrants, 3 x 3 blocks, cells); queries as in the paper",
}


@dataclass
class BudgetCurve:
    """An evaluation run's budget curve, ready for a model card: a table (one row per budget, then baselines) and
    the lines that say what was measured. Built from sweep results by ``metaembed.evaluation.report.budget_curve``."""

    metric: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "header": self.header, "rows": self.rows, "notes": self.notes}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "BudgetCurve":
        return cls(str(value["metric"]), [str(cell) for cell in value["header"]],
                   [[str(cell) for cell in row] for row in value["rows"]], [str(note) for note in value.get("notes") or []])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def example_item(text: str | None, image: str | None = None) -> Item | None:
    """An item as a card shows it: its text (cut to :data:`MAX_EXAMPLE_CHARS`), with the image's file name if any."""
    text = " ".join((text or "").split())
    if len(text) > MAX_EXAMPLE_CHARS:
        text = text[: MAX_EXAMPLE_CHARS - 3].rstrip() + "..."
    if image:
        name = image.replace("\\", "/").rsplit("/", 1)[-1]
        return {"text": text, "image": name} if text else {"image": name}
    return text or None


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not name.startswith(("/", ".", "~")) and ":" not in name


def _short_name(name: str) -> str:
    """A backbone's name for a title: a hub id's name, or a local folder's (its parent's when it is just "model")."""
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if len(parts) > 1 and parts[-1].lower() in ("model", "models"):
        return parts[-2]
    return parts[-1] if parts else name


def _example_budget(model: "MetaEmbed", training: TrainingRecord | None) -> Budget:
    """A middle budget of the trained groups (or of the paper's), within the model's meta tokens."""
    groups = clip_budgets(training.groups if training else PAPER_BUDGETS, model.num_query_meta_tokens,
                          model.num_document_meta_tokens)
    return groups[len(groups) // 2] if groups else Budget(1, 1)


def _details(model: "MetaEmbed") -> list[str]:
    backbone = model.backbone_name_or_path
    attention = model.backbone.meta_attention
    max_length = model.backbone.max_seq_length
    lines = [
        f"- **Backbone:** `{backbone}`" if backbone else "- **Backbone:** not recorded",
        f"- **Query meta tokens (R_q):** {model.num_query_meta_tokens} vectors per query",
        f"- **Document meta tokens (R_c):** {model.num_document_meta_tokens} vectors per document",
        f"- **Meta attention:** `{attention}` ({MEANINGS.get(attention, 'see metaembed.model.meta_windows')})",
        f"- **Vector size (D):** {model.embedding_dim}, L2-normalised"
        + (" (after a linear projection)" if any(isinstance(module, Dense) for module in model) else ""),
        "- **Score:** MaxSim (late interaction) over the first r_q query and r_c document vectors",
        f"- **Inputs:** {'text and images' if model.accepts_images else 'text'}"
        + (f"; up to {max_length} tokens of the item's own, its meta tokens come after them" if max_length else ""),
    ]
    prompts = {name: text for name, text in model.prompts.items() if text}
    if prompts:
        lines.append("- **Prompts:** " + "; ".join(f"{name}: `{text}`" for name, text in prompts.items()))
    return lines


def _training(training: TrainingRecord | None) -> list[str]:
    if training is None:
        return ["Not trained by `metaembed train`: the meta tokens are as initialised (or trained elsewhere)."]
    lines = [
        "Matryoshka Multi-Vector Retrieval (MMR): one contrastive loss per budget group, each on the first r_q query "
        "and r_c document vectors, so every prefix of the vectors is a usable embedding.",
        "",
        "- **MMR groups (r_q, r_c):** " + ", ".join(f"({group})" for group in training.groups),
    ]
    if training.temperature is not None:
        lines.append(f"- **Temperature:** {training.temperature:g}")
    lines += [f"- **{name[:1].upper()}{name[1:]}:** {value}" for name, value in training.settings.items()]
    if training.data:
        lines.append("- **Data:** " + ", ".join(f"`{name}`" for name in training.data))
    return lines


def _usage(model: "MetaEmbed", model_id: str, training: TrainingRecord | None) -> list[str]:
    # the training data's text items (its images are not shipped with the model)
    queries = [item for item in (training.example_queries if training else []) if isinstance(item, str)] or DEFAULT_QUERIES
    documents = [item for item in (training.example_documents if training else []) if isinstance(item, str)] or DEFAULT_DOCUMENTS
    queries, documents = queries[:3], documents[:3]
    budget = _example_budget(model, training)
    images = ['# an item may also be an image path, a PIL image or {"text": ..., "image": ...}'] if model.accepts_images else []
    return [
        "```bash", "pip install metaembed", "```", "", "```python", "from metaembed import MetaEmbed, maxsim", "",
        f"model = MetaEmbed.from_pretrained({json.dumps(model_id)})",
        *images, "queries = model.encode_query([", *[f"    {json.dumps(item, ensure_ascii=False)}," for item in queries], "])",
        "documents = model.encode_document([", *[f"    {json.dumps(item, ensure_ascii=False)}," for item in documents], "])",
        f"# queries: ({len(queries)}, {model.num_query_meta_tokens}, {model.embedding_dim}), documents: "
        f"({len(documents)}, {model.num_document_meta_tokens}, {model.embedding_dim}); a budget keeps a prefix",
        f"scores = maxsim(queries, documents, query_budget={budget.query}, document_budget={budget.document})",
        "```", "", "From the command line:", "", "```bash",
        f"metaembed index --model {model_id} --corpus corpus.jsonl --out my-index",
        f"metaembed search --index my-index --query {json.dumps(queries[0], ensure_ascii=False)} --budget {budget}",
        "```", "",
        "In sentence-transformers, with metaembed installed, `MultiVectorEncoder(path, trust_remote_code=True)` gives the "
        "same vectors (without budgets); `SentenceTransformer(path)` refuses the folder rather than return one pooled "
        "vector per item.",
    ]


def render_model_card(
    model: "MetaEmbed", model_id: str, training: TrainingRecord | None = None, curve: BudgetCurve | None = None
) -> str:
    """The README.md of a saved MetaEmbed model; ``model_id`` is the name the usage lines load it by."""
    backbone = model.backbone_name_or_path
    metadata = ModelCardData(
        library_name="metaembed", pipeline_tag="feature-extraction", tags=TAGS,
        base_model=backbone if _is_hub_id(backbone) else None,
    )
    title = f"MetaEmbed over {_short_name(backbone)}" if backbone else "MetaEmbed model"
    lines = [
        "---", metadata.to_yaml(), "---", "", f"# {title}", "",
        f"A [MetaEmbed](https://arxiv.org/abs/2509.18095) retrieval model: every query becomes "
        f"{model.num_query_meta_tokens} vectors and every document {model.num_document_meta_tokens}, the last hidden "
        "states of learnable meta tokens appended to the backbone's input. Scores are late interaction (MaxSim), and "
        "you choose at query time how many vectors to use, a budget (r_q, r_c): quality against index size and "
        "latency, from one model and one index.", "",
        "## Model details", "", *_details(model), "",
        "## Training", "", *_training(training), "",
    ]
    if curve is not None:
        lines += ["## Budget curve", "", f"{curve.metric} at each budget (values in %).", "", curve.markdown(), ""]
        lines += [f"- {note}" for note in curve.notes] + ([""] if curve.notes else [])
    lines += ["## Usage", "", *_usage(model, model_id, training), "", "## Citation", "", PAPER + ", arXiv:2509.18095.", ""]
    return "\n".join(lines)
