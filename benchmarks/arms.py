"""What the training benchmarks share: train an arm, or reuse the one an earlier run trained with the same settings."""

from __future__ import annotations

import time
from pathlib import Path

from metaembed.training import TrainConfig, train


def train_or_reuse(config: TrainConfig, reuse: bool) -> tuple[str, float | None, float | None]:
    """(model path, final training loss, training seconds): trains, or with ``reuse`` takes the model an earlier
    run saved in the same output folder from exactly these settings (loss and seconds then unknown: None)."""
    saved = Path(config.output_dir) / "train_config.yaml"
    model_path = Path(config.output_dir) / "model"
    if reuse and saved.is_file() and model_path.is_dir():
        if TrainConfig.from_yaml(saved).to_dict() == config.to_dict():
            print(f"  reusing {model_path} (trained with the same settings)", flush=True)
            return str(model_path), None, None
        print(f"  {saved} has other settings: training again", flush=True)
    start = time.perf_counter()
    trained = train(config)
    return trained.model_path, trained.training_loss, round(time.perf_counter() - start, 1)
