"""``train(config)``: data -> model (+LoRA) -> MMR loss -> trainer -> checkpoints -> final MetaEmbed folder.

The same call runs on one CPU, one GPU, or many GPUs/nodes: launched under ``torchrun`` or
``accelerate launch``, the HF Trainer underneath runs DDP and the MMR loss all-gathers the documents so
every process scores its queries against the global batch. See ``metaembed.cli.train`` for the launch lines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import MultiVectorEncoderTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.multi_vector_encoder.losses import (
    CachedMultiVectorMultipleNegativesRankingLoss,
    MultiVectorMultipleNegativesRankingLoss,
)
from transformers import AutoConfig, TrainerCallback

from metaembed.budgets import Budget
from metaembed.hardware import bf16_is_fast
from metaembed.model import MetaEmbed
from metaembed.model.saved_config import is_metaembed_folder, module_folder, sentence_transformers_max_length
from metaembed.model.vlm import composed_vlm_path
from metaembed.training.checkpoints import checkpoint_step, latest_complete_checkpoint, trim_metrics_log, whole_run_loss
from metaembed.training.config import TRAINING_ARGUMENT_NAMES, TrainConfig
from metaembed.training.data import (
    ReadReport, TrainingExample, read_jsonl, read_mmeb_train, to_dataset, to_task_datasets,
)
from metaembed.training.lora import apply_lora, is_vision_part, merge_lora
from metaembed.training.mmr_loss import MMRLoss
from metaembed.training.projector_warm_start import warm_start_projector
from metaembed.training.record import training_record
from metaembed.training.regularizers import BackboneTeacher
from metaembed.training.trainer import LargestGroupFirstCallback, LogAtSaveCallback, MetaEmbedTrainer, MetricsLogCallback

logger = logging.getLogger(__name__)

FINAL_MODEL_DIR = "model"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.yaml"


@dataclass
class TrainResult:
    model_path: str
    """The final MetaEmbed folder (load with ``MetaEmbed.from_pretrained``)."""
    metrics_path: str
    global_step: int
    training_loss: float
    """The mean loss over every step of the run, those before a resume included."""
    data_report: ReadReport


def load_examples(config: TrainConfig) -> tuple[list[TrainingExample], ReadReport]:
    """All training examples of the config (JSONL files, then the MMEB mixture), with one report."""
    examples: list[TrainingExample] = []
    report = ReadReport()
    for path in config.train_jsonl:
        rows, file_report = read_jsonl(
            path, on_bad_row=config.on_bad_row, check_images=config.check_images,
            allow_outside_paths=config.allow_outside_paths,
        )
        examples.extend(rows)
        report.merge(file_report)
    if config.mmeb_root:
        if not config.mmeb_subsets:
            raise ValueError("mmeb_root is set but mmeb_subsets is empty: name the subsets (and their weights)")
        rows, mmeb_report = read_mmeb_train(
            config.mmeb_root, config.mmeb_subsets, image_root=config.mmeb_image_root,
            num_examples=config.mmeb_num_examples, seed=config.seed, on_bad_row=config.on_bad_row,
            check_images=config.check_images,
        )
        examples.extend(rows)
        report.merge(mmeb_report)
    if not examples:
        raise ValueError("no training data: set train_jsonl and/or mmeb_root (" + report.summary() + ")")
    return examples, report


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")
"""What the backbone families call their attention-dropout probability in their config."""


def attention_dropout_kwargs(model_name_or_path: str, probability: float | None) -> dict[str, float]:
    """``config_kwargs`` that set the backbone's attention dropout to ``probability`` (nothing for None)."""
    if probability is None:
        return {}
    backbone_config = AutoConfig.from_pretrained(model_name_or_path)
    keys = [key for key in ATTENTION_DROPOUT_KEYS if key in backbone_config.to_dict()]
    if keys:
        return {key: probability for key in keys}
    text_config = backbone_config.get_text_config()
    current = [getattr(text_config, key) for key in ATTENTION_DROPOUT_KEYS if hasattr(text_config, key)]
    if current and all(value == probability for value in current):
        return {}  # e.g. a VLM whose language model already has this attention dropout
    if current and getattr(backbone_config, "text_config", None) is text_config:
        # a VLM: its language model's config, given whole (a sub-config is replaced, not merged)
        return {"text_config": {**text_config.to_dict(), **{key: probability for key in ATTENTION_DROPOUT_KEYS
                                                               if hasattr(text_config, key)}}}
    raise ValueError(
        f"attention_dropout: {model_name_or_path!r} ({type(backbone_config).__name__}) has no top-level "
        f"attention-dropout setting ({', '.join(ATTENTION_DROPOUT_KEYS)}) to override; edit its config instead"
    )


def build_model(config: TrainConfig) -> MetaEmbed:
    """A saved MetaEmbed folder is continued; anything else is a backbone that gets fresh meta tokens."""
    if not config.model:
        raise ValueError("set 'model': a backbone (hub id or folder) or a saved MetaEmbed folder")
    saved = module_folder(config.model)  # a saved MetaEmbed folder keeps its backbone's files in this folder
    if saved is not None and config.vision_tower:
        raise ValueError(f"vision_tower: {config.model!r} is a saved MetaEmbed model, which already has its backbone")
    backbone = composed_vlm_path(config.vision_tower, config.model) if config.vision_tower else config.model
    config_kwargs = attention_dropout_kwargs(str(saved or backbone), config.attention_dropout) or None
    if saved is not None:
        return MetaEmbed.from_pretrained(config.model, config_kwargs=config_kwargs)
    return MetaEmbed.from_backbone(
        backbone,
        num_query_meta_tokens=config.num_query_meta_tokens,
        num_document_meta_tokens=config.num_document_meta_tokens,
        projection_dim=config.projection_dim,
        max_seq_length=config.max_seq_length,
        meta_token_init_seed=config.seed,
        meta_attention=config.meta_attention,
        first_vector=config.first_vector,
        meta_residual=config.meta_residual,
        query_tail_weight=config.query_tail_weight,
        mixed_image_weight=config.mixed_image_weight,
        config_kwargs=config_kwargs,
    )


def inference_length(model: MetaEmbed, config: TrainConfig) -> int | None:
    """How many of an item's own tokens the saved model reads: ``inference_max_seq_length``, else the backbone's own
    sentence-transformers length when it is longer than the training length (within the room the meta tokens
    leave), else None (keep the training length). Measured: the quickstart's model, trained on 128 tokens, scores
    +5.6 nDCG@10 across domains when it reads 256 (benchmarks/results/inference_length.md)."""
    if config.inference_max_seq_length is not None:
        return config.inference_max_seq_length
    if config.max_seq_length is None or module_folder(config.model) is not None:  # already its own length
        return None
    own = sentence_transformers_max_length(config.model)
    if own is None or own <= config.max_seq_length:
        return None
    limit = model.backbone.position_limit
    room = None if limit is None else limit - max(model.num_query_meta_tokens, model.num_document_meta_tokens)
    return max(config.max_seq_length, own if room is None else min(own, room))


def set_inference_length(model: MetaEmbed, config: TrainConfig) -> None:
    """Give the model its inference length (see :func:`inference_length`) before it is saved."""
    length = inference_length(model, config)
    if length is not None and length != model.max_seq_length:
        logger.info("the saved model reads %d tokens of an item (trained on %s)", length, model.max_seq_length)
        model.max_seq_length = length


def fp32_master_weights(model: MetaEmbed) -> None:
    """Full fine-tuning keeps fp32 weights whatever dtype the checkpoint was saved in (many hub backbones ship
    bf16, which transformers loads as bf16): an optimizer step on bf16 weights rounds small updates away (a
    5e-5 step on a 0.05 weight is below bf16's resolution). bf16 mixed precision still does the arithmetic.
    With LoRA the frozen base keeps its dtype and peft keeps the adapters in fp32."""
    lower = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if lower:
        logger.info("the backbone's weights are %s: trained as float32 master weights", " and ".join(lower))
        model.float()


def build_loss(model: MetaEmbed, config: TrainConfig) -> MMRLoss:
    if config.loss == "cached":
        inner = CachedMultiVectorMultipleNegativesRankingLoss(
            model, mini_batch_size=config.mini_batch_size, gather_across_devices=config.gather_across_devices
        )
    else:
        inner = MultiVectorMultipleNegativesRankingLoss(model, gather_across_devices=config.gather_across_devices)
    return MMRLoss(
        model, inner, groups=config.budget_groups, weights=config.group_weights,
        temperature=config.temperature, normalize_by_query=config.normalize_by_query,
        teacher=build_teacher(model, config) if config.anchor_weight > 0 or config.distill_weight > 0 else None,
        anchor_weight=config.anchor_weight, diversity_weight=config.diversity_weight,
        distill_weight=config.distill_weight, distill_temperature=config.distill_temperature,
        distill_teacher=config.distill_teacher, nesting=config.mmr_nesting,
    )


def build_teacher(model: MetaEmbed, config: TrainConfig) -> BackboneTeacher:
    """The backbone as it was before training (loaded again, frozen), or ``distill_teacher_model`` (a fine-tuned
    copy of its architecture), for the anchor and distillation terms."""
    source = config.distill_teacher_model or config.model
    if is_metaembed_folder(source):
        raise ValueError(
            f"anchor_weight/distill_weight: {source!r} is a MetaEmbed checkpoint; the teacher must be a plain model of "
            "the backbone's architecture (the backbone it came from, or distill_teacher_model)"
        )
    backbone = type(model.backbone.model).from_pretrained(source)
    backbone.to(next(model.parameters()).device)
    tokenizer = model.backbone.tokenizer
    return BackboneTeacher(backbone, model.backbone.meta_token_id_base, getattr(tokenizer, "pad_token_id", None),
                           tokenizer=tokenizer)


def use_bf16(config: TrainConfig) -> bool:
    """bf16 mixed precision: 'auto' turns it on where it is fast (a bf16 GPU, or a CPU with native bf16:
    2.2x faster MiniLM steps on an AVX512-BF16 CPU, same loss curve; benchmarks/mmr_training)."""
    if config.bf16 == "auto":
        return bf16_is_fast("cuda" if torch.cuda.is_available() else "cpu")
    return config.bf16 == "true"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(config: TrainConfig, model: MetaEmbed) -> MultiVectorEncoderTrainingArguments:
    """The trainer's arguments: each setting of ``TRAINING_ARGUMENT_NAMES`` under its trainer name, what a
    MetaEmbed run always sets, then ``config.training_args`` (any other field of the arguments)."""
    prompts = {}
    if model.prompts.get("query"):
        prompts["query"] = model.prompts["query"]
    if model.prompts.get("document"):
        prompts.update({name: model.prompts["document"] for name in ["positive", *[f"negative_{i + 1}" for i in range(config.num_negatives)]]})
    learning_rate_mapping = {}
    if config.meta_token_learning_rate is not None:
        learning_rate_mapping[r"\.(query|document)_meta_tokens$"] = config.meta_token_learning_rate
        if any(name.endswith(".meta_residual.weight") for name, _ in model.named_parameters()):
            learning_rate_mapping[r"\.meta_residual\.weight$"] = config.meta_token_learning_rate  # also fresh
    if config.projector_learning_rate is not None:  # also its trained copy under LoRA (projector.modules_to_save...)
        learning_rate_mapping[r"\.projector\."] = config.projector_learning_rate
    ours = {name: getattr(config, name) for name in TRAINING_ARGUMENT_NAMES if name != "resume"}
    ours.update(
        learning_rate=config.resolved_learning_rate,  # None: the LoRA-dependent default
        bf16=use_bf16(config),
        report_to=reporting_integrations(config),
        eval_steps=config.eval_steps or config.save_steps,
        no_duplicates=BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER,
    )  # warmup_ratio goes to warmup_steps as is: transformers 5 reads a float < 1 as a ratio of the total steps
    arguments = {TRAINING_ARGUMENT_NAMES[name]: value for name, value in ours.items()}
    arguments.update(
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        data_seed=config.seed,
        learning_rate_mapping=learning_rate_mapping,
        prompts=prompts or None,
        save_strategy="steps",
        logging_strategy="steps",
        logging_first_step=True,
        eval_strategy="steps" if config.dev_data else "no",
        dataloader_drop_last=world_size() > 1,
        ddp_backend=None if torch.cuda.is_available() else ("gloo" if world_size() > 1 else None),
        # Queries and documents are two forwards before one backward: DDP must not look for unused
        # parameters per forward (the second would hide the first), so every trainable one must be used.
        ddp_find_unused_parameters=False if world_size() > 1 else None,
        use_cpu=not torch.cuda.is_available(),
    )
    check_training_args(config)
    arguments.update(config.training_args)
    return MultiVectorEncoderTrainingArguments(**arguments)


def reporting_integrations(config: TrainConfig) -> str | list[str]:
    """``report_to`` as the trainer takes it; a named integration that is not installed is a clear error now, not
    after the model has loaded."""
    names = [name.strip() for name in config.report_to.split(",") if name.strip()]
    if names in ([], ["none"], ["all"]):
        return names[0] if names else "none"
    from transformers.integrations import get_available_reporting_integrations

    available = get_available_reporting_integrations()
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(f"report_to: {', '.join(missing)} is not installed here (installed: "
                         f"{', '.join(available) or 'none'}); pip install it, or report_to: none")
    return names


def check_training_args(config: TrainConfig) -> None:
    """Every name of ``config.training_args`` must be a ``MultiVectorEncoderTrainingArguments`` field."""
    known = {f.name for f in dataclasses.fields(MultiVectorEncoderTrainingArguments)}
    unknown = sorted(set(config.training_args) - known)
    if unknown:
        raise ValueError(f"training_args: {unknown} are not MultiVectorEncoderTrainingArguments settings")


def train(config: TrainConfig | dict[str, Any] | str | Path, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Train a MetaEmbed model with the MMR loss; returns where the final model and the metrics log are.

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or a YAML file. With ``resume``, the run
    continues from the last complete checkpoint in ``output_dir`` (a half-written one is skipped, with a log
    line) and ends with the same weights, metrics log and training loss as an uninterrupted run with the
    same config.
    """
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    check_training_args(config)
    reporting_integrations(config)
    output_dir = Path(config.output_dir)
    resume_from = resume_checkpoint(output_dir) if config.resume else None

    examples, report = load_examples(config)
    logger.info("training data: %s", report.summary())
    make_dataset = to_task_datasets if config.batches_by_task else to_dataset
    dataset = make_dataset(examples, num_negatives=config.num_negatives, seed=config.seed)

    torch.manual_seed(config.seed)
    model = build_model(config)
    # A fresh backbone only: on resume the checkpoint overwrites the fit.
    if config.projector_warm_start and module_folder(config.model) is None:
        warm_start = warm_start_projector(model, examples, image_readout=config.image_readout,
                                          strength=config.warm_start_strength)
        if warm_start is not None:
            logger.info(warm_start.summary())
    length = inference_length(model, config)
    if length is not None:  # a length the saved model could not take is refused now, not after training
        model.backbone._check_room_for_meta_tokens(length)
    if not config.lora:
        fp32_master_weights(model)
    for name, parameter in model.backbone.model.named_parameters():
        if ".pooler." in f".{name}":  # BERT's pooler never reaches the meta-token vectors
            parameter.requires_grad = False
        if not config.train_vision_tower and is_vision_part(name):
            parameter.requires_grad = False
    if config.lora:
        targets = apply_lora(
            model.backbone.model, rank=config.lora_rank, alpha=config.lora_alpha,
            dropout=config.lora_dropout, target_modules=config.lora_target_modules,
        )
        logger.info("LoRA on %d layers; meta tokens and projection trained in full", len(targets))
    loss = build_loss(model, config)
    # saved with every checkpoint and the final model: the groups as trained (clipped to the meta tokens)
    model.training_record = training_record(config, examples, loss.groups)
    model.budget_curve = None  # an evaluation of the weights before this run no longer describes the model
    args = training_arguments(config, model)
    evaluator = dev_evaluator(config, loss.groups)

    examples_per_step = config.batch_size * config.gradient_accumulation_steps * world_size()
    metrics_path = output_dir / METRICS_FILE
    trainer = MetaEmbedTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[LogAtSaveCallback(), MetricsLogCallback(metrics_path, examples_per_step),
                   *([LargestGroupFirstCallback(loss, config.largest_group_first_steps)]
                     if config.largest_group_first_steps else []),
                   *(callbacks or [])],
    )
    trainer.lora_checkpoints = config.lora
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        config.save_yaml(output_dir / CONFIG_FILE)
        if resume_from is not None:  # the steps after the checkpoint are run (and logged) again
            trim_metrics_log(metrics_path, checkpoint_step(resume_from) or 0)
        _append_record(metrics_path, {
            "event": "data", "rows_read": report.rows_read, "rows_kept": report.rows_kept,
            "rows_skipped": report.rows_skipped, "skipped": report.skipped[:100],
            "resumed_from": resume_from,
        })
    output = trainer.train(resume_from_checkpoint=resume_from)
    if evaluator is not None and not evaluated_at(trainer.state.log_history, output.global_step):
        trainer.evaluate()  # the final weights' dev curve: logged, and in the final model's card
    training_loss = whole_run_loss(trainer.state.log_history)
    training_loss = output.training_loss if training_loss is None else training_loss

    final_dir = output_dir / FINAL_MODEL_DIR
    if trainer.is_world_process_zero():
        if config.lora and config.merge_lora:
            merge_lora(model.backbone.model)
        model.training_record.settings["steps"] = output.global_step
        set_inference_length(model, config)
        model.save_pretrained(str(final_dir))
        config.save_yaml(final_dir / CONFIG_FILE)
        _append_record(metrics_path, {"event": "end", "global_step": output.global_step, "training_loss": training_loss,
                                      "model_path": str(final_dir)})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TrainResult(str(final_dir), str(metrics_path), output.global_step, training_loss, report)


def dev_evaluator(config: TrainConfig, groups: list[Budget]) -> Any:
    """The evaluator of ``dev_data`` at the trained groups (None without dev data)."""
    if not config.dev_data:
        return None
    from metaembed.training.dev_evaluator import BudgetSweepEvaluator

    return BudgetSweepEvaluator(config.dev_data, groups, split=config.dev_split, batch_size=config.batch_size)


def evaluated_at(log_history: list[dict[str, Any]], step: int) -> bool:
    """Whether the trainer's log holds an evaluation at ``step``."""
    return any(record.get("step") == step and any(key.startswith("eval_") for key in record) for record in log_history)


def resume_checkpoint(output_dir: Path) -> str:
    """The latest complete ``checkpoint-N`` of a run (incomplete ones are skipped and logged); a clear error if none."""
    checkpoint, skipped = latest_complete_checkpoint(output_dir)
    if checkpoint is None:
        detail = f" (incomplete, skipped: {', '.join(path.name for path in skipped)})" if skipped else ""
        raise FileNotFoundError(f"resume: no checkpoint-* folder in {str(output_dir)!r} to continue from{detail}")
    logger.info("resume: continuing from %s", checkpoint)
    return str(checkpoint)


def _append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
