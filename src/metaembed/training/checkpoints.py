"""Resuming a run safely: pick the latest *complete* checkpoint, trim the metrics log back to it, and report
the training loss of the whole run (not only of the part after the resume).

The HF Trainer writes a ``checkpoint-N`` folder file by file and ``trainer_state.json`` last, so a folder
without a readable ``trainer_state.json`` is one whose save was interrupted (a kill, a full disk): it is
skipped, with a log line naming it, and the run continues from the checkpoint before it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(folder: str | Path) -> int | None:
    """The global step a checkpoint folder holds, or None when its trainer state is missing or torn."""
    try:
        state = json.loads((Path(folder) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-N`` folder of a run, newest (largest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_complete_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose save finished, and the newer incomplete ones skipped on the way (logged)."""
    skipped: list[Path] = []
    for folder in checkpoint_folders(output_dir):
        if checkpoint_step(folder) is not None:
            return folder, skipped
        logger.warning("resume: skipping incomplete checkpoint %s (no readable %s: its save was interrupted)",
                       folder, TRAINER_STATE_FILE)
        skipped.append(folder)
    return None, skipped


def trim_metrics_log(path: str | Path, last_step: int) -> int:
    """Drop the records of steps after ``last_step`` (and torn lines) from a JSONL metrics log, so the steps a
    resumed run replays are logged once. Returns how many lines were dropped; the file is replaced atomically."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        step = record.get("step", record.get("global_step")) if isinstance(record, dict) else None
        if isinstance(step, (int, float)) and step > last_step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(temporary, path)
    return dropped


def whole_run_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean training loss over every logged step of the run, a resumed one included: each logged ``loss``
    is the mean since the previous log, so it is weighted by the steps it covers. None when nothing was logged."""
    total, steps, previous = 0.0, 0, 0
    for record in log_history:
        if "loss" not in record or "step" not in record:
            continue
        covered = int(record["step"]) - previous
        if covered > 0:
            total += float(record["loss"]) * covered
            steps += covered
            previous = int(record["step"])
    return total / steps if steps else None
