"""What the training benchmarks share: train an arm, or reuse the one an earlier run trained with the same settings;
name the machine they ran on."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
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


def cached_evaluation(model_path: str, inputs: dict, evaluate: Callable[[], dict]) -> dict:
    """``evaluate()``'s JSON result for this saved model and these evaluation ``inputs`` (texts, ids, lengths), kept
    beside the model in ``benchmark_eval.json`` and returned from there while neither the model's files nor the
    inputs change: a later run re-scores a reused arm (for paired comparisons) without encoding its sets again."""
    files = sorted(path for path in Path(model_path).rglob("*") if path.is_file())
    stamp = [(str(path.relative_to(model_path)), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    key = hashlib.sha256(json.dumps([stamp, inputs], sort_keys=True).encode()).hexdigest()
    cache = Path(model_path).parent / "benchmark_eval.json"
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in stored:
        print(f"  reusing the evaluation in {cache} (same model files, same test sets)", flush=True)
        return stored[key]
    stored[key] = evaluate()
    cache.write_text(json.dumps(stored) + "\n")
    return stored[key]


def machine() -> str:
    """Where the run ran, for the report."""
    import torch

    from metaembed.hardware import cpu_has_native_bf16, cpu_model_name

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA, bf16 mixed precision), {os.cpu_count()} CPU threads"
    precision = "native bf16" if cpu_has_native_bf16() else "no native bf16: fp32"
    return f"{torch.get_num_threads()} threads of {cpu_model_name()} ({precision}), no GPU"
