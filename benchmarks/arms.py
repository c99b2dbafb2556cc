"""What the training benchmarks share: train an arm, or reuse the one an earlier run trained with the same settings;
name the machine they ran on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from metaembed.training import TrainConfig, train


def train_or_reuse(config: TrainConfig, reuse: bool) -> tuple[str, float | None, float | None]:
    """(model path, final training loss, training seconds): trains, or with ``reuse`` takes the model an earlier
    run saved in the same output folder from exactly these settings (its loss and seconds as that run recorded them
    in ``benchmark_training.json``, or None)."""
    saved = Path(config.output_dir) / "train_config.yaml"
    model_path = Path(config.output_dir) / "model"
    record = Path(config.output_dir) / "benchmark_training.json"
    if reuse and saved.is_file() and model_path.is_dir():
        if TrainConfig.from_yaml(saved).to_dict() == config.to_dict():
            print(f"  reusing {model_path} (trained with the same settings)", flush=True)
            recorded = json.loads(record.read_text()) if record.is_file() else {}
            return str(model_path), recorded.get("training_loss"), recorded.get("seconds")
        print(f"  {saved} has other settings: training again", flush=True)
    start = time.perf_counter()
    trained = train(config)
    seconds = round(time.perf_counter() - start, 1)
    record.write_text(json.dumps({"training_loss": trained.training_loss, "seconds": seconds}) + "\n")
    return trained.model_path, trained.training_loss, seconds


def machine() -> str:
    """Where the run ran, for the report."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA, bf16 mixed precision), {os.cpu_count()} CPU threads"
    return f"{torch.get_num_threads()} CPU threads, no GPU"
