"""The sentence-transformers multi-vector trainer (HF Trainer over accelerate / torch.distributed), taught
three MetaEmbed things: turn item cells into model inputs (opening images per batch), log every MMR group's loss,
and checkpoint LoRA runs as their trainable weights only.

Progress and logs are the trainer's own: its progress bar (which also prints every log line) and ``report_to``
(TensorBoard, W&B, ...). Two callbacks add what it has no setting for: :class:`MetricsLogCallback` keeps every
log as a line of ``metrics.jsonl`` (with the throughput since the last log), which benchmarks and a resumed run
read, and :class:`LogAtSaveCallback` logs at every checkpoint, so a resumed run logs each step once.
:class:`LargestGroupFirstCallback` switches the MMR loss from its largest group alone to every group
(``largest_group_first_steps``)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import MultiVectorEncoderTrainer
from sentence_transformers.multi_vector_encoder.data_collator import MultiVectorEncoderDataCollator
from transformers import TrainerCallback

from metaembed.inputs import DEFAULT_MAX_IMAGE_SIDE, InvalidInputError
from metaembed.training.checkpoints import whole_run_loss
from metaembed.training.data import cells_to_items
from metaembed.training.mmr_loss import MMRLoss

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS_FILE = "trainable_weights.safetensors"
"""A LoRA checkpoint: the adapters, meta tokens and projection; the frozen backbone is rebuilt from its source."""


@dataclass
class MetaEmbedDataCollator(MultiVectorEncoderDataCollator):
    """Turns the item cells of a batch into model inputs (opening its images now, not at read time), then tokenizes."""

    accepts_images: bool = False
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        decoded: list[dict[str, Any]] = [dict(row) for row in features]
        for column in features[0]:
            if column == "dataset_name":
                continue
            cells = [row[column] for row in features]
            try:
                items = cells_to_items(cells, accepts_images=self.accepts_images, max_image_side=self.max_image_side)
            except InvalidInputError as error:
                raise InvalidInputError(f"training column {column!r}: {error}") from None
            for row, item in zip(decoded, items):
                row[column] = item
        return super().__call__(decoded)


class MetaEmbedTrainer(MultiVectorEncoderTrainer):
    """``MultiVectorEncoderTrainer`` + per-group MMR loss logging + LoRA-aware checkpoints."""

    lora_checkpoints: bool = False

    def get_data_collator(self, model, args, processing_class=None) -> MetaEmbedDataCollator:
        return MetaEmbedDataCollator(
            preprocess_fn=model.preprocess,
            router_mapping=args.router_mapping,
            prompts=args.prompts,
            max_length=getattr(args, "max_length", None),
            accepts_images=bool(getattr(model, "accepts_images", False)),
            max_image_side=getattr(model, "max_image_side", DEFAULT_MAX_IMAGE_SIDE),
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        losses = self.loss.values() if isinstance(self.loss, dict) else [self.loss]
        for loss in losses:
            if isinstance(loss, MMRLoss) and loss.last_group_losses:
                self.track_loss_components(dict(loss.last_group_losses))
        return result

    # ------------------------------------------------------------------------------ checkpoints
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.lora_checkpoints:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        weights = {
            name: parameter.detach().contiguous().cpu()
            for name, parameter in self.model.named_parameters()
            if parameter.requires_grad
        }
        save_file(weights, os.path.join(output_dir, TRAINABLE_WEIGHTS_FILE))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, checkpoint_path: str, model=None) -> None:
        path = os.path.join(checkpoint_path, TRAINABLE_WEIGHTS_FILE)
        if not os.path.isfile(path):
            if self.lora_checkpoints:
                raise FileNotFoundError(f"{checkpoint_path} has no {TRAINABLE_WEIGHTS_FILE}: not a LoRA checkpoint of this run")
            return super()._load_from_checkpoint(checkpoint_path)
        load_trainable_weights(self.model, path)


def load_trainable_weights(model: torch.nn.Module, path: str) -> None:
    """Load a trainable-weights checkpoint; every trainable parameter must be in it, with its shape."""
    weights = load_file(path)
    parameters = dict(model.named_parameters())
    trainable = {name for name, parameter in parameters.items() if parameter.requires_grad}
    missing, unexpected = sorted(trainable - set(weights)), sorted(set(weights) - set(parameters))
    if missing or unexpected:
        raise ValueError(f"{path} does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            if parameters[name].shape != value.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, expected {tuple(parameters[name].shape)}")
            parameters[name].copy_(value)


class MetricsLogCallback(TrainerCallback):
    """Appends every log (loss, each group's loss, learning rate, throughput) to a JSONL file."""

    def __init__(self, path: str | Path, examples_per_step: int) -> None:
        self.path = Path(path)
        self.examples_per_step = examples_per_step
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        if "train_loss" in logs:  # the trainer's own mean covers only this call's steps, not those before a resume
            whole = whole_run_loss(state.log_history)
            record["train_loss"] = logs["train_loss"] if whole is None else whole
        now = time.perf_counter()
        if self._last is not None and state.global_step > self._last[1] and "loss" in logs:
            seconds = now - self._last[0]
            steps = state.global_step - self._last[1]
            record["steps_per_second"] = round(steps / seconds, 4)
            record["examples_per_second"] = round(steps * self.examples_per_step / seconds, 2)
            self._last = (now, state.global_step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class LogAtSaveCallback(TrainerCallback):
    """Log the loss at every checkpoint and at the last step, so the log up to a checkpoint covers every step
    before it: a run resumed from there then logs each step exactly once and the whole run's mean loss is known."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or control.should_training_stop:
            control.should_log = True
        return control


class LargestGroupFirstCallback(TrainerCallback):
    """For a run's first ``steps`` optimizer steps the MMR loss trains its largest group alone, then every group
    (``largest_group_first_steps``). Read from the step counter, so a resumed run switches at the same step."""

    def __init__(self, loss: MMRLoss, steps: int) -> None:
        self.loss = loss
        self.steps = steps

    def on_step_begin(self, args, state, control, **kwargs):
        self.loss.only_largest = state.global_step < self.steps
