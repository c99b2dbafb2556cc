"""Resuming after a kill during a checkpoint save: the half-written checkpoint is skipped (and named in the log),
the metrics log holds every step once, and the reported loss is the whole run's, as in an uninterrupted run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from metaembed import MetaEmbed
from metaembed.training import TrainConfig, train
from metaembed.training.checkpoints import trim_metrics_log, whole_run_loss
from tests.test_train_loop import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands for the process dying."""


class KillAfterSaving(TrainerCallback):
    """Dies right after the checkpoint of ``step`` is written (the test then tears that checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed at step {state.global_step}")


def step_losses(metrics_path: str | Path) -> list[tuple[int, float]]:
    """(step, loss) of every per-step line of a metrics log, in file order."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines()]
    return [(record["step"], record["loss"]) for record in records if "loss" in record]


def end_event(metrics_path: str | Path) -> dict:
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines()]
    return [record for record in records if record.get("event") == "end"][-1]


def test_resume_skips_a_half_written_checkpoint_and_logs_every_step_once(tiny_bert_path, tmp_path, caplog):
    data = write_jsonl(tmp_path / "train.jsonl", 24)
    settings = dict(
        model=tiny_bert_path, train_jsonl=[str(data)], batch_size=8, max_steps=5, save_steps=2, logging_steps=3,
        num_query_meta_tokens=4, num_document_meta_tokens=8, learning_rate=1e-3,
    )
    straight = train(TrainConfig(output_dir=str(tmp_path / "straight"), **settings))
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        train(TrainConfig(output_dir=str(run), **settings), callbacks=[KillAfterSaving(4)])
    (run / "checkpoint-4" / "trainer_state.json").unlink()  # the save of step 4 never finished

    with caplog.at_level(logging.WARNING, logger="metaembed.training.checkpoints"):
        resumed = train(TrainConfig(output_dir=str(run), resume=True, **settings))
    assert any("skipping incomplete checkpoint" in message and str(run / "checkpoint-4") in message
               for message in caplog.messages), caplog.messages

    expected = step_losses(straight.metrics_path)
    assert [step for step, _ in expected] == [1, 2, 3, 4, 5]  # every 3 steps, plus each checkpoint and the end
    logged = step_losses(resumed.metrics_path)
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5]  # steps 3 and 4 ran twice, logged once
    assert [loss for _, loss in logged] == pytest.approx([loss for _, loss in expected], rel=1e-4)

    whole_run_mean = sum(loss for _, loss in expected) / 5
    assert straight.training_loss == pytest.approx(whole_run_mean, rel=1e-5)
    assert resumed.training_loss == pytest.approx(straight.training_loss, rel=1e-4)
    assert end_event(resumed.metrics_path)["training_loss"] == pytest.approx(straight.training_loss, rel=1e-4)
    a = MetaEmbed.from_pretrained(straight.model_path).state_dict()
    b = MetaEmbed.from_pretrained(resumed.model_path).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5, msg=name)


def test_resume_with_only_incomplete_checkpoints_names_them(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')  # torn while written
    with pytest.raises(FileNotFoundError, match=r"no checkpoint.*incomplete, skipped: checkpoint-3"):
        train(TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"), resume=True))


def test_trim_metrics_log_and_whole_run_loss(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [{"event": "data"}, {"step": 1, "loss": 4.0}, {"step": 3, "loss": 2.0}, {"step": 5, "loss": 1.0},
             {"event": "end", "global_step": 5}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 6, "lo')
    assert trim_metrics_log(log, 3) == 3  # step 5, the end event after it, and the torn last line
    assert [json.loads(line) for line in log.read_text().splitlines()] == lines[:3]
    assert whole_run_loss(lines) == pytest.approx((4.0 * 1 + 2.0 * 2 + 1.0 * 2) / 5)
    assert whole_run_loss([{"event": "data"}]) is None
