"""Every training setting in one dataclass, readable from YAML and overridable field by field (flags).

:class:`TrainConfig` is the public object: YAML files (``train_config.yaml`` in every run's output folder) hold its
fields, ``TrainConfig.from_yaml`` / ``from_dict`` / ``to_dict`` read and write them, and each field's help text
(``metadata["help"]``) is what transformers' ``HfArgumentParser`` shows in ``metaembed train --help``
(:mod:`metaembed.training.flags` parses the flags with it).

The optimisation settings a MetaEmbed run always sets keep the names earlier runs' YAML files use
(``batch_size``, ``num_epochs``, ...); :data:`TRAINING_ARGUMENT_NAMES` says which
``MultiVectorEncoderTrainingArguments`` field each one is, and every other field of those arguments
(``adam_beta2``, ``eval_strategy``, ...) is given through ``training_args``, not declared here a second time.
This module imports neither torch nor transformers: ``metaembed train --help`` and ``serve`` read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from metaembed.budgets import PAPER_BUDGETS, Budget, split_budget_list
from metaembed.training.defaults import DEFAULT_TEMPERATURE, DISTILL_TEACHERS, MMR_NESTINGS

LOSS_MODES = ("plain", "cached")
BF16_MODES = ("auto", "true", "false")

TRAINING_ARGUMENT_NAMES: dict[str, str] = {
    "output_dir": "output_dir",
    "batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_steps": "max_steps",
    "num_epochs": "num_train_epochs",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_steps",
    "lr_scheduler": "lr_scheduler_type",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "bf16": "bf16",
    "gradient_checkpointing": "activation_checkpointing",
    "no_duplicates": "batch_sampler",
    "dataloader_num_workers": "dataloader_num_workers",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "logging_steps": "logging_steps",
    "resume": "resume_from_checkpoint",
    "report_to": "report_to",
    "eval_steps": "eval_steps",
}
"""Each :class:`TrainConfig` setting that is a ``MultiVectorEncoderTrainingArguments`` field, and that field's name:
the one place the two are tied (``metaembed.training.run.training_arguments`` builds the arguments from it, and
``training_args`` may not set these fields a second time)."""


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING,
            aliases: tuple[str, ...] = ()) -> Any:
    """A :class:`TrainConfig` field with its help text (and extra flag names) where ``HfArgumentParser`` reads them."""
    metadata: dict[str, Any] = {"help": help}
    if aliases:
        metadata["aliases"] = list(aliases)
    return field(default=default, default_factory=factory, metadata=metadata)


def _paper_groups() -> list[str]:
    return [str(Budget(*budget)) for budget in PAPER_BUDGETS]


@dataclass
class TrainConfig:
    """MetaEmbed training settings. Defaults follow the paper where it is known (see PAPER.md)."""

    # model
    model: str = setting("", aliases=("-m",), help="Backbone (hub id or folder) for a new MetaEmbed model, or a "
                         "saved MetaEmbed folder to continue.")
    num_query_meta_tokens: int = setting(16, help="Meta tokens (vectors) of a query.")
    num_document_meta_tokens: int = setting(64, help="Meta tokens (vectors) of a document.")
    projection_dim: int | None = setting(None, help="Project every vector to this size (None: the backbone's).")
    meta_attention: str = setting("full", help="What meta tokens read: full (the paper: the whole item), "
                                  "document_windows or windows (nested windows: vector 1 the whole item, then halves, "
                                  "quarters, ...; see metaembed.model.meta_windows), document_lines (vector 1 the "
                                  "whole document, vector v its line v - 1), document_segments (the same, each line's "
                                  "tokens also read apart; see metaembed.model.meta_segments), document_regions (a "
                                  "composed vision-language backbone's document image: vectors 2.. read regions of its "
                                  "feature grid, quadrants first; see metaembed.model.meta_regions), or auto (document_lines "
                                  "where the backbone can read lines: a text backbone with a fast tokenizer; else full).")
    first_vector: str = setting("auto", help="An item's first vector: mean (the backbone's own mean pooling: the "
                                "item's tokens never read the meta tokens, so (1,1) starts where the backbone stands; "
                                "the meta tokens give vectors 2..R), meta (the paper: the first meta token), or auto "
                                "(mean where the backbone supports it: text backbones, decoders and metaembed's composed "
                                "VLMs; meta for another vision-language model over a bidirectional encoder).")
    meta_residual: bool | None = setting(None, help="Every meta vector is the item's mean plus a learned, zero-"
                                         "initialised linear map of its meta token's state, so every budget starts "
                                         "where the backbone's mean pooling stands (None: on with a mean first vector).")
    query_tail_weight: float | None = setting(None, help="Weigh a query's vectors 2..R_q together this many times its "
                                              "vector 1 (each extra vector adds an equal share), so a larger budget "
                                              "adds to vector 1's score instead of averaging it away (None: equal "
                                              "weights, the paper's).")
    vision_tower: str | None = setting(None, help="A vision tower with a feature grid (folder or hub id, e.g. "
                                       "MobileNetV2): makes 'model' (a language model) the language half of a composed "
                                       "vision-language backbone (see metaembed.model.vlm).")
    train_vision_tower: bool = setting(False, help="Train the vision tower's weights too; by default a VLM's vision "
                                       "tower stays frozen.")
    projector_warm_start: bool = setting(True, help="For a freshly composed vision-language backbone (vision_tower, or "
                                         "a composed folder as model): before training, fit a linear path of the "
                                         "new projector in closed form (ridge from the tower's pooled features to the "
                                         "mean word embedding of the paired captions), so training starts from a "
                                         "model that already matches images to words (see "
                                         "metaembed.training.projector_warm_start).")
    warm_start_strength: float | None = setting(0.15, help="The projector warm start's ridge strength, relative to the "
                                                "features' variance per channel (see metaembed.ridge); None: chosen "
                                                "for each fit by 5-fold cross-validation over the training images.")
    image_readout: bool = setting(False, help="With projector_warm_start and a mean first vector: also give the "
                                  "vision-language backbone an image readout (each grid cell's features mapped "
                                  "linearly onto the language model's output at that cell), fitted in closed form to "
                                  "what an image's mean misses of its caption's. Lifts image-alone retrieval to the "
                                  "level of a ridge map between frozen towers, but image+text documents then lean on "
                                  "the image and lose much of their text's match (see README, Benchmarks).")
    mixed_image_weight: float | None = setting(None, help="A composed vision-language backbone with a mean first "
                                               "vector: the share of an image+text item's mean that its image cells "
                                               "hold, the rest going to its text (None: every token the same share, so "
                                               "a 7 x 7 grid outweighs a short caption; see README, Benchmarks).")
    max_seq_length: int | None = setting(None, help="Most tokens an item keeps of its own (text, image placeholders); "
                                         "the meta tokens are appended beyond it. None: as many as the backbone's "
                                         "positions hold next to the meta tokens.")
    inference_max_seq_length: int | None = setting(
        None, help="Most of an item's own tokens the saved model reads when it indexes, searches and evaluates. None: "
        "the backbone's own length as a sentence-transformers model (256 for all-MiniLM-L6-v2) when that is longer "
        "than max_seq_length, so training on short inputs does not cut long documents later; else max_seq_length.")
    # data
    train_jsonl: list[str] = setting(factory=list, help="Training JSONL files (rows: query, positive, negatives).")
    mmeb_root: str | None = setting(None, help="Folder of MMEB-train (its subsets are mixed by mmeb_subsets).")
    mmeb_subsets: dict[str, float] | str | None = setting(
        factory=dict, help="MMEB-train subset name -> sampling weight; on the command line 'A=1,B=0.5' or JSON.")
    mmeb_image_root: str | None = setting(None, help="Folder of MMEB-train's images (default: under mmeb_root).")
    mmeb_num_examples: int | None = setting(None, help="Examples drawn from the MMEB mixture (None: all).")
    on_bad_row: str = setting("stop", help="What a bad training row does: stop (the error names it) or skip.")
    check_images: bool = setting(True, help="Open every image while reading the data (bad ones are found first).")
    allow_outside_paths: bool = setting(False, help="Accept JSONL image paths that lead outside the JSONL file's "
                                        "folder (refused by default).")
    num_negatives: int = setting(1, help="Hard negatives per row (the paper: one); rows with fewer get other rows' "
                                 "positives.")
    # loss
    groups: list[str] = setting(factory=_paper_groups, help="MMR budget groups r_q,r_c (e.g. '1,1 2,4 4,8'; "
                                "';' separates them too).")
    group_weights: list[float] | None = setting(None, help="One weight per group (None: all equal).")
    mmr_nesting: str = setting("shared", help="How the groups share gradients: shared (the paper: every group trains "
                               "every vector of its prefix) or boosted (a group trains only the vectors its largest "
                               "nested group lacks, so a larger budget learns what the smaller one misses).")
    largest_group_first_steps: int = setting(0, help="Train only the largest budget group for this many optimizer "
                                             "steps, then every group (the vectors first spread out as they do when "
                                             "that group is trained alone); 0: every group from the first step.")
    temperature: float = setting(DEFAULT_TEMPERATURE, help="Softmax temperature of the InfoNCE loss.")
    normalize_by_query: bool = setting(True, help="Divide each group's MaxSim scores by its r_q, so every group's "
                                       "logits share one scale (see MMRLoss).")
    anchor_weight: float = setting(0.0, help="Pull each item's first vector towards the frozen backbone's mean-pooled "
                                   "embedding (1 - cos), so the (1,1) budget keeps what the backbone knew; 0 turns it "
                                   "off. Needs a backbone model and no projection.")
    diversity_weight: float = setting(0.0, help="Penalise the mean cosine between an item's own vectors (they "
                                      "collapse to one on one-topic data).")
    distill_weight: float = setting(0.0, help="Late-interaction distillation: every budget group learns the frozen "
                                    "backbone's token-level (ColBERT-style MaxSim) ranking of each query's candidates "
                                    "(KL); 0 turns it off. Needs a backbone model.")
    distill_teacher: str = setting("tokens", help="What the distillation teacher scores a (query, document) pair "
                                   "by: tokens (ColBERT-style MaxSim over the backbone's token states) or sentences "
                                   "(the document's best sentence, each encoded alone and mean-pooled, against the "
                                   "query's mean-pooled embedding).")
    distill_temperature: float | None = setting(None, help="Softmax temperature of the distillation teacher's "
                                                "scores; None: temperature.")
    distill_teacher_model: str | None = setting(None, help="A model folder of the backbone's architecture and "
                                                "tokenizer, fine-tuned token by token (ColBERT-style), whose token "
                                                "states the distillation and anchor terms read instead of the frozen "
                                                "backbone's (None: the backbone as it was before training).")
    loss: str = setting("plain", help="plain, or cached (GradCache: the batch is embedded in "
                                               "chunks of mini_batch_size).")
    mini_batch_size: int = setting(8, help="Chunk size of the cached loss.")
    gather_across_devices: bool = setting(True, help="Score every process's queries against the documents of all "
                                          "processes (no-op on one process).")
    # optimisation (TRAINING_ARGUMENT_NAMES: the trainer's names for these)
    output_dir: str = setting("metaembed-trained", aliases=("-o", "--out"), help="Output folder: checkpoints, "
                              "metrics.jsonl, train_config.yaml and the final model in model/.")
    batch_size: int = setting(32, help="Per process; the global batch is batch_size x processes x "
                              "gradient_accumulation_steps.")
    gradient_accumulation_steps: int = setting(1, help="Optimiser steps accumulate this many batches.")
    max_steps: int = setting(-1, help="Optimiser steps (-1: num_epochs decides).")
    num_epochs: float = setting(1.0, help="Passes over the training data (when max_steps is -1).")
    learning_rate: float | None = setting(None, help="Default 1e-4 with LoRA, 2e-5 for full fine-tuning.")
    meta_token_learning_rate: float | None = setting(None, help="Learning rate of the meta tokens (fresh "
                                                     "parameters); default: learning_rate.")
    projector_learning_rate: float | None = setting(None, help="Learning rate of a composed vision-language "
                                                    "backbone's projector (new, untrained layers; LLaVA aligns it "
                                                    "at ~1e-3); default: learning_rate.")
    weight_decay: float = setting(0.0, help="AdamW weight decay.")
    warmup_ratio: float = setting(0.1, help="Share of the steps with a rising learning rate.")
    lr_scheduler: str = setting("linear", help="transformers' scheduler type (linear, cosine, constant, ...).")
    max_grad_norm: float = setting(1.0, help="Gradient clipping norm.")
    seed: int = setting(0, help="Seed of the model's fresh weights, the data order and the sampling.")
    bf16: str = setting(
        "auto", help="bf16 mixed precision: auto (on for a GPU with bf16 and a CPU with native bf16), true or false. "
        "The MMR loss itself is always computed in fp32.")
    gradient_checkpointing: bool = setting(False, help="Recompute activations in the backward pass (less memory).")
    attention_dropout: float | None = setting(None, help="Override the backbone's attention-dropout probability "
                                              "(None keeps it). 0 lets PyTorch's fused attention run on CPU: with "
                                              "dropout it falls back to the unfused path (3x slower MiniLM steps).")
    batches_by_task: bool = setting(True, help="Draw every batch from one task (the query's and the positive's "
                                    "modalities: text->image, image->text, ...; sentence-transformers' proportional "
                                    "multi-dataset sampler), so in-batch negatives are never told apart by modality "
                                    "alone. No effect on data of one task.")
    no_duplicates: bool = setting(True, help="Batches never hold the same text twice (no false in-batch negatives).")
    dataloader_num_workers: int = setting(0, help="Worker processes that load batches.")
    training_args: dict[str, Any] | str | None = setting(
        factory=dict, help="Any other setting of sentence-transformers' MultiVectorEncoderTrainingArguments, passed "
        "as is (YAML mapping, or JSON on the command line: '{\"adam_beta2\": 0.98}'); checked when training starts.")
    # LoRA
    lora: bool = setting(False, help="Train LoRA adapters instead of the whole backbone.")
    lora_rank: int = setting(32, help="LoRA rank (the paper: 32).")
    lora_alpha: int = setting(32, help="LoRA alpha (the paper: 32).")
    lora_dropout: float = setting(0.0, help="LoRA dropout.")
    lora_target_modules: list[str] | None = setting(None, help="Default: the attention and MLP projections of the "
                                                    "language model, whatever the family names them.")
    merge_lora: bool = setting(True, help="Fold the LoRA weights into the backbone for the final model (a plain "
                               "MetaEmbed folder).")
    # checkpoints and logs
    save_steps: int = setting(500, help="Save a checkpoint every this many steps.")
    save_total_limit: int | None = setting(None, help="Keep at most this many checkpoints (None: all).")
    logging_steps: int = setting(10, help="Log the loss (metrics.jsonl, the progress bar) every this many steps.")
    resume: bool = setting(False, help="Continue from the last complete checkpoint in output_dir.")
    report_to: str = setting("none", help="Where the trainer also sends its logs (transformers' report_to): none, "
                             "tensorboard, wandb, ... (comma-separated; the package must be installed). "
                             "metrics.jsonl and the progress bar are always written.")
    # evaluation during training
    dev_data: str | None = setting(None, help="Data evaluated during training at every trained budget, as "
                                   "'metaembed eval' reads it (e.g. the BEIR folder a data builder wrote, with "
                                   "qrels/dev.tsv); its metrics reach metrics.jsonl, the logs and the model card.")
    dev_split: str = setting("dev", help="The split of dev_data evaluated during training.")
    eval_steps: int | None = setting(None, help="Evaluate on dev_data every this many steps (None: every save_steps), "
                                     "and after the last step.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value, naming the setting when one is wrong; lists and mappings given as text (flags) are
        read here: ``groups`` "1,1 2,4" or "1,1;2,4", ``mmeb_subsets`` "A=1,B=2", ``training_args`` JSON."""
        # imported here, not at the top: the settings (and `metaembed train --help`) load without torch
        from metaembed.model.meta_windows import AUTO_FIRST_VECTOR, FIRST_VECTORS, check_meta_attention
        from metaembed.training.data import BAD_ROW_POLICIES

        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {self.on_bad_row!r}")
        check_meta_attention(self.meta_attention)  # names the setting and its choices when wrong
        if self.first_vector not in (*FIRST_VECTORS, AUTO_FIRST_VECTOR):
            raise ValueError(f"first_vector must be {', '.join(FIRST_VECTORS)} or {AUTO_FIRST_VECTOR}, "
                             f"got {self.first_vector!r}")
        if self.meta_residual and self.first_vector == "meta":
            raise ValueError("meta_residual adds to the item's mean: it needs first_vector: mean (or auto)")
        if self.query_tail_weight is not None and not float(self.query_tail_weight) > 0:
            raise ValueError(f"query_tail_weight must be positive (or None), got {self.query_tail_weight}")
        if self.warm_start_strength is not None and not float(self.warm_start_strength) >= 0:
            raise ValueError(f"warm_start_strength must be >= 0 (or None), got {self.warm_start_strength}")
        if self.mixed_image_weight is not None and not 0 < float(self.mixed_image_weight) < 1:
            raise ValueError(f"mixed_image_weight must lie strictly between 0 and 1 (or be None), "
                             f"got {self.mixed_image_weight}")
        if self.loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {self.loss!r}")
        self.bf16 = str(self.bf16).lower()
        if self.bf16 not in BF16_MODES:
            raise ValueError(f"bf16 must be one of {BF16_MODES}, got {self.bf16!r}")
        if isinstance(self.train_jsonl, str):
            self.train_jsonl = [self.train_jsonl]
        groups = [self.groups] if isinstance(self.groups, str) else self.groups
        self.groups = [str(Budget.parse(group)) for item in groups
                       for group in (split_budget_list(item) if isinstance(item, str) else [item])]
        self.mmeb_subsets = _subset_weights(self.mmeb_subsets)
        self.training_args = _mapping("training_args", self.training_args)
        taken = sorted(set(self.training_args) & set(TRAINING_ARGUMENT_NAMES.values()))
        if taken:
            ours = [name for name, argument in TRAINING_ARGUMENT_NAMES.items() if argument in taken]
            raise ValueError(f"training_args: {taken} are settings of their own here; set {ours} instead")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps must be at least 1, got {self.eval_steps}")
        for name in ("batch_size", "num_query_meta_tokens", "num_document_meta_tokens", "mini_batch_size",
                     "gradient_accumulation_steps", "save_steps", "logging_steps", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.largest_group_first_steps < 0:
            raise ValueError(f"largest_group_first_steps must be >= 0, got {self.largest_group_first_steps}")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        for name in ("anchor_weight", "diversity_weight", "distill_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (self.anchor_weight or self.diversity_weight or self.distill_weight) and self.loss != "plain":
            raise ValueError(
                "anchor_weight, diversity_weight and distill_weight need loss: plain (GradCache does not carry them)"
            )
        for name in ("learning_rate", "meta_token_learning_rate", "projector_learning_rate"):
            if getattr(self, name) is not None and not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mmr_nesting not in MMR_NESTINGS:
            raise ValueError(f"mmr_nesting must be one of {', '.join(MMR_NESTINGS)}, got {self.mmr_nesting!r}")
        if self.distill_teacher not in DISTILL_TEACHERS:
            raise ValueError(f"distill_teacher must be one of {', '.join(DISTILL_TEACHERS)}, got {self.distill_teacher!r}")
        if self.distill_teacher_model is not None and not (self.distill_weight or self.anchor_weight):
            raise ValueError("distill_teacher_model is read by the distillation and anchor terms: set distill_weight "
                             "or anchor_weight above 0")
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
    def check_names(cls, values: dict[str, Any], source: str = "config") -> None:
        """Refuse settings this class does not have, listing those it has."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown settings {unknown}; known settings: {sorted(known)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        cls.check_names(values, source)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a YAML file; ``overrides`` (e.g. CLI flags) win over it. Relative paths stay relative to the cwd."""
        values = read_yaml_settings(path)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_yaml_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML config file (setting -> value), every name checked against :class:`TrainConfig`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a training config must be a mapping of setting -> value")
    TrainConfig.check_names(values, source=str(path))
    return values


def _mapping(name: str, value: Any) -> dict[str, Any]:
    """A mapping setting given as a mapping, JSON text or nothing."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is neither a mapping nor JSON text") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {value!r}")
    return dict(value)


def _subset_weights(value: Any) -> dict[str, float]:
    """``mmeb_subsets`` as a mapping; the command line's ``"A=1,B=0.5"`` (a name alone weighs 1) or JSON."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        return {key.strip(): float(weight) if weight.strip() else 1.0 for key, _, weight in pairs}
    return {key: float(weight) for key, weight in _mapping("mmeb_subsets", value).items()}
