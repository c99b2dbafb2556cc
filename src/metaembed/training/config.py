"""Every training setting in one dataclass, readable from YAML and overridable field by field (CLI flags)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.training.defaults import DEFAULT_TEMPERATURE

LOSS_MODES = ("plain", "cached")
BF16_MODES = ("auto", "true", "false")


@dataclass
class TrainConfig:
    """MetaEmbed training settings. Defaults follow the paper where it is known (see PAPER.md)."""

    # model
    model: str = ""
    """Backbone (hub id or folder) for a new MetaEmbed model, or a saved MetaEmbed folder to continue."""
    num_query_meta_tokens: int = 16
    num_document_meta_tokens: int = 64
    projection_dim: int | None = None
    meta_attention: str = "full"
    """What meta tokens read: ``full`` (the paper: the whole item), ``document_windows`` or ``windows``
    (nested windows: vector 1 the whole item, then halves, quarters, ...; see metaembed.model.meta_windows)."""
    vision_tower: str | None = None
    """A vision tower with a feature grid (folder or hub id, e.g. MobileNetV2): makes ``model`` (a language model)
    the language half of a composed vision-language backbone (see metaembed.model.vlm)."""
    train_vision_tower: bool = False
    """Train the vision tower's weights too; by default a VLM's vision tower stays frozen."""
    max_seq_length: int | None = None
    """Most tokens an item keeps of its own (text, image placeholders); the meta tokens are appended beyond it.
    None: as many as the backbone's positions hold next to the meta tokens."""
    # data
    train_jsonl: list[str] = field(default_factory=list)
    mmeb_root: str | None = None
    mmeb_subsets: dict[str, float] = field(default_factory=dict)
    """MMEB-train subset name -> sampling weight."""
    mmeb_image_root: str | None = None
    mmeb_num_examples: int | None = None
    on_bad_row: str = "stop"
    check_images: bool = True
    allow_outside_paths: bool = False
    """Accept JSONL image paths that lead outside the JSONL file's folder (refused by default)."""
    num_negatives: int = 1
    """Hard negatives per row (the paper: one); rows with fewer get other rows' positives."""
    # loss
    groups: list[str] = field(default_factory=lambda: [str(Budget(*b)) for b in PAPER_BUDGETS])
    group_weights: list[float] | None = None
    temperature: float = DEFAULT_TEMPERATURE
    normalize_by_query: bool = True
    """Divide each group's MaxSim scores by its r_q, so every group's logits share one scale (see MMRLoss)."""
    anchor_weight: float = 0.0
    """Pull each item's first vector towards the frozen backbone's mean-pooled embedding (``1 - cos``), so the
    (1,1) budget keeps what the backbone knew; 0 turns it off. Needs a backbone model and no projection."""
    diversity_weight: float = 0.0
    """Penalise the mean cosine between an item's own vectors (they collapse to one on one-topic data)."""
    distill_weight: float = 0.0
    """Late-interaction distillation: every budget group learns the frozen backbone's token-level (ColBERT-style
    MaxSim) ranking of each query's candidates (KL); 0 turns it off. Needs a backbone model."""
    distill_temperature: float | None = None
    """Softmax temperature of the distillation teacher's scores; None: ``temperature``."""
    loss: str = "plain"
    """'plain' or 'cached' (GradCache: the batch is embedded in chunks of mini_batch_size)."""
    mini_batch_size: int = 8
    gather_across_devices: bool = True
    """Score every process's queries against the documents of all processes (no-op on one process)."""
    # optimisation
    output_dir: str = "metaembed-trained"
    batch_size: int = 32
    """Per process; the global batch is batch_size x processes x gradient_accumulation_steps."""
    gradient_accumulation_steps: int = 1
    max_steps: int = -1
    num_epochs: float = 1.0
    learning_rate: float | None = None
    """Default 1e-4 with LoRA, 2e-5 for full fine-tuning."""
    meta_token_learning_rate: float | None = None
    """Learning rate of the meta tokens (fresh parameters); default: learning_rate."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: str = "auto"
    """bf16 mixed precision: 'auto' (on for a GPU with bf16 and a CPU with native bf16), 'true' or 'false'.
    The MMR loss itself is always computed in fp32."""
    gradient_checkpointing: bool = False
    attention_dropout: float | None = None
    """Override the backbone's attention-dropout probability (None keeps it). 0 lets PyTorch's fused attention
    run on CPU: with dropout it falls back to the unfused path (3x slower MiniLM steps at 224 tokens)."""
    no_duplicates: bool = True
    """Batches never hold the same text twice (no false in-batch negatives)."""
    dataloader_num_workers: int = 0
    # LoRA
    lora: bool = False
    lora_rank: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    """Default: the attention and MLP projections of the language model, whatever the family names them."""
    merge_lora: bool = True
    """Fold the LoRA weights into the backbone for the final model (a plain MetaEmbed folder)."""
    # checkpoints and logs
    save_steps: int = 500
    save_total_limit: int | None = None
    logging_steps: int = 10
    resume: bool = False
    """Continue from the last checkpoint in output_dir."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value, naming the setting when one is wrong."""
        from metaembed.model.meta_windows import windowed_sides  # here, not at the top: the settings (and
        from metaembed.training.data import BAD_ROW_POLICIES  # `metaembed train --help`) load without torch

        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {self.on_bad_row!r}")
        windowed_sides(self.meta_attention)  # names the setting and its choices when wrong
        if self.loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {self.loss!r}")
        self.bf16 = str(self.bf16).lower()
        if self.bf16 not in BF16_MODES:
            raise ValueError(f"bf16 must be one of {BF16_MODES}, got {self.bf16!r}")
        if isinstance(self.train_jsonl, str):
            self.train_jsonl = [self.train_jsonl]
        self.groups = [str(Budget.parse(group)) for group in self.groups]
        for name in ("batch_size", "num_query_meta_tokens", "num_document_meta_tokens", "mini_batch_size",
                     "gradient_accumulation_steps", "save_steps", "logging_steps", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        for name in ("anchor_weight", "diversity_weight", "distill_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (self.anchor_weight or self.diversity_weight or self.distill_weight) and self.loss != "plain":
            raise ValueError(
                "anchor_weight, diversity_weight and distill_weight need loss: plain (GradCache does not carry them)"
            )
        if self.distill_temperature is not None and not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got {self.distill_temperature}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")

    @property
    def budget_groups(self) -> list[Budget]:
        return [Budget.parse(group) for group in self.groups]

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.lora else 2e-5

    # ------------------------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown settings {unknown}; known settings: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a YAML file; ``overrides`` (e.g. CLI flags) win over it. Relative paths stay relative to the cwd."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a mapping of setting -> value")
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
