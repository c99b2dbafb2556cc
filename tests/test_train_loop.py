"""The training loop end to end: MiniLM learns at every budget group, resume equals an uninterrupted run,
LoRA checkpoints, the CLI, and the final folder loads with MetaEmbed.from_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from metaembed import MetaEmbed
from metaembed.cli import app
from metaembed.training import MMRLoss, TrainConfig, train

TOPICS = ["text editor", "file compression", "json parsing", "web server", "image viewer", "music player",
          "email client", "password manager"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, count: int) -> Path:
    rows = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        rows.append({
            "query": f"{topic} number {index}",
            "positive": f"package {index}: a small {topic} program, release {index}",
            "negatives": [f"package {index + 100}: a {TOPICS[(index + 3) % len(TOPICS)]} tool"],
        })
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def group_losses(model: MetaEmbed, rows_path: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    loss = MMRLoss(model)
    model.eval()
    with torch.no_grad():
        queries = model.encode_query([row["query"] for row in rows])
        documents = model.encode_document([row["positive"] for row in rows])
        loss.loss_from_embeddings(queries, [documents])
    return {name: float(value) for name, value in loss.last_group_losses.items()}


def test_minilm_learns_at_every_group(minilm_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 16)
    config = TrainConfig(
        model=minilm_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"), batch_size=8, max_steps=8,
        learning_rate=1e-4, meta_token_learning_rate=1e-3, warmup_ratio=0.0, save_steps=100, logging_steps=2,
        num_query_meta_tokens=8, num_document_meta_tokens=16, num_negatives=1,
    )
    before = group_losses(MetaEmbed.from_backbone(minilm_path, 8, 16, meta_token_init_seed=0), data)
    result = train(config)
    trained = MetaEmbed.from_pretrained(result.model_path)
    after = group_losses(trained, data)
    assert list(after) == ["loss_1x1", "loss_2x4", "loss_4x8", "loss_8x16"]  # (16,64) clipped to (8,16)
    for name in after:
        assert after[name] < 0.8 * before[name], (name, before[name], after[name])

    records = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    step_logs = [r for r in records if "loss" in r and "step" in r]
    assert step_logs and all(set(after) <= set(r) for r in step_logs)
    assert all(r["examples_per_second"] > 0 for r in step_logs[1:])
    assert records[0]["event"] == "data" and records[0]["rows_kept"] == 16
    assert (Path(result.model_path) / "train_config.yaml").is_file()
    assert trained.encode_query("text editor", budget=2).shape == (1, 2, 384)


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    model = MetaEmbed.from_pretrained(str(run / "model"))
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("lora", [False, True])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_bert_path, tmp_path, lora):
    data = write_jsonl(tmp_path / "train.jsonl", 24)
    settings = dict(
        model=tiny_bert_path, train_jsonl=[str(data)], batch_size=8, max_steps=5, save_steps=2, logging_steps=1,
        num_query_meta_tokens=4, num_document_meta_tokens=8, learning_rate=1e-3, lora=lora, lora_rank=4, lora_alpha=8,
    )
    train(TrainConfig(output_dir=str(tmp_path / "straight"), **settings))
    interrupted = TrainConfig(output_dir=str(tmp_path / "resumed"), **settings)
    train(interrupted, callbacks=[StopAt(2)])
    checkpoint = tmp_path / "resumed" / "checkpoint-2"
    assert checkpoint.is_dir()
    if lora:  # a LoRA checkpoint holds the trainable weights only: adapters + meta tokens
        names = set(load_file(str(checkpoint / "trainable_weights.safetensors")))
        assert "0.query_meta_tokens" in names and any("lora_A" in name for name in names)
        assert not any(name.endswith("word_embeddings.weight") for name in names)
    train(TrainConfig(output_dir=str(tmp_path / "resumed"), resume=True, **settings))

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert not any("lora" in name for name in straight)  # merged into the backbone at the end
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=1e-5, msg=name)
    initial = MetaEmbed.from_backbone(tiny_bert_path, 4, 8).state_dict()
    assert not torch.equal(initial["0.query_meta_tokens"], straight["0.query_meta_tokens"])
    changed_backbone = not torch.equal(
        initial["0.auto_model.encoder.layer.0.attention.self.query.weight"]
        if "0.auto_model.encoder.layer.0.attention.self.query.weight" in initial
        else initial["0.model.encoder.layer.0.attention.self.query.weight"],
        straight.get("0.auto_model.encoder.layer.0.attention.self.query.weight",
                     straight.get("0.model.encoder.layer.0.attention.self.query.weight")),
    )
    assert changed_backbone  # full fine-tuning, or LoRA merged into the query projection


def test_resume_without_checkpoint_is_a_clear_error(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "none"), resume=True))


def test_cli_reads_yaml_and_flags_override_it(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"model: {tiny_bert_path}\ntrain_jsonl: [{data}]\nbatch_size: 4\nmax_steps: 50\n"
        f"num_query_meta_tokens: 2\nnum_document_meta_tokens: 4\noutput_dir: {tmp_path / 'cli'}\n"
    )
    result = CliRunner().invoke(app, ["train", str(config), "--max-steps", "2", "--groups", "1,1;2,4",
                                      "--temperature", "0.05", "--no-no-duplicates"])
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "cli" / "model" / "train_config.yaml").read_text()
    assert "max_steps: 2" in saved and "temperature: 0.05" in saved and "no_duplicates: false" in saved
    assert "- 1,1\n- 2,4" in saved
    assert MetaEmbed.from_pretrained(str(tmp_path / "cli" / "model")).num_document_meta_tokens == 4

    bad = CliRunner().invoke(app, ["train", str(config), "--loss", "huge"])
    assert bad.exit_code == 2 and "loss must be one of" in bad.output


class RecordCheckpointing(TrainerCallback):
    """Whether the backbone really recomputes activations during training."""

    def __init__(self) -> None:
        self.enabled: bool | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.enabled = bool(model.backbone.model.is_activation_checkpointing)


def test_gradient_checkpointing_trains_to_the_same_weights(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 16)
    settings = dict(model=tiny_bert_path, train_jsonl=[str(data)], batch_size=8, max_steps=2, learning_rate=1e-3,
                    num_query_meta_tokens=4, num_document_meta_tokens=8, save_steps=100)
    plain, checkpointed = RecordCheckpointing(), RecordCheckpointing()
    train(TrainConfig(output_dir=str(tmp_path / "plain"), **settings), callbacks=[plain])
    train(TrainConfig(output_dir=str(tmp_path / "ckpt"), gradient_checkpointing=True, **settings), callbacks=[checkpointed])
    assert plain.enabled is False and checkpointed.enabled is True
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "ckpt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5, msg=name)


class RecordLosses(TrainerCallback):
    """Every logged training loss, and whether the trainer ran in bf16 mixed precision."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.bf16: bool | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bf16 = bool(args.bf16)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def test_seeded_runs_are_reproducible(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 16)
    settings = dict(model=tiny_bert_path, train_jsonl=[str(data)], batch_size=4, max_steps=3, learning_rate=1e-3,
                    num_query_meta_tokens=2, num_document_meta_tokens=4, save_steps=100)
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        train(TrainConfig(output_dir=str(tmp_path / name), seed=seed, **settings))
    first, again, other = (final_weights(tmp_path / name) for name in ("first", "again", "other"))
    for name in first:
        assert torch.equal(first[name], again[name]), name
    assert not torch.equal(first["0.query_meta_tokens"], other["0.query_meta_tokens"])


def test_the_papers_layout_trains(tiny_bert_path, tmp_path):
    """first_vector: meta without residual (the paper's layout; what a VLM over an encoder gets by default) has no
    residual map for the meta tokens' learning rate to reach: it trains, and its meta tokens move."""
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], batch_size=4, max_steps=2, learning_rate=1e-3,
                         meta_token_learning_rate=1e-2, num_query_meta_tokens=2, num_document_meta_tokens=4,
                         first_vector="meta", meta_residual=False, save_steps=100, output_dir=str(tmp_path / "run"))
    model = MetaEmbed.from_pretrained(train(config).model_path)
    assert model.backbone.first_vector == "meta" and not any("meta_residual" in n for n, _ in model.named_parameters())
    untrained = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, first_vector="meta", meta_token_init_seed=0)
    assert not torch.equal(final_weights(tmp_path / "run")["0.query_meta_tokens"],
                           untrained.backbone.query_meta_tokens.detach())


def test_bf16_mixed_precision_on_cpu_learns_like_fp32(tiny_bert_path, tmp_path):
    """bf16 autocast (what 'auto' picks on a CPU with native bf16) follows the fp32 run's loss closely."""
    data = write_jsonl(tmp_path / "train.jsonl", 32)
    settings = dict(model=tiny_bert_path, train_jsonl=[str(data)], batch_size=8, max_steps=8, learning_rate=2e-3,
                    warmup_ratio=0.0, logging_steps=1, num_query_meta_tokens=2, num_document_meta_tokens=4,
                    save_steps=100)
    runs, model_paths = {}, {}
    for bf16 in ("true", "false"):
        runs[bf16] = RecordLosses()
        result = train(TrainConfig(output_dir=str(tmp_path / bf16), bf16=bf16, **settings), callbacks=[runs[bf16]])
        model_paths[bf16] = result.model_path
    assert runs["true"].bf16 is True and runs["false"].bf16 is False
    mixed, full = runs["true"].losses, runs["false"].losses
    assert len(mixed) == len(full) == 8
    assert mixed[0] == pytest.approx(full[0], rel=0.02)  # the same first batch, rounded differently
    assert min(mixed[-3:]) < 0.8 * mixed[0] and min(full[-3:]) < 0.8 * full[0]
    saved = MetaEmbed.from_pretrained(model_paths["true"])
    assert saved.backbone.query_meta_tokens.dtype == torch.float32  # master weights stay fp32


def test_a_bf16_checkpoint_trains_in_fp32_master_weights(tiny_bert_path, tmp_path):
    """Many hub backbones ship bf16 weights, which transformers loads as bf16; stepped in bf16, an update of 1e-5 on a
    weight near 0.02 (bf16's resolution there is ~8e-5) rounds away. Training keeps fp32 master weights instead: every
    saved tensor is fp32 and nearly every backbone weight moves."""
    from transformers import AutoModel, AutoTokenizer

    bf16_backbone = tmp_path / "bf16_backbone"
    AutoModel.from_pretrained(tiny_bert_path, dtype=torch.bfloat16).save_pretrained(bf16_backbone)
    AutoTokenizer.from_pretrained(tiny_bert_path).save_pretrained(bf16_backbone)
    assert {t.dtype for t in load_file(bf16_backbone / "model.safetensors").values() if t.is_floating_point()} == {
        torch.bfloat16}
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    config = TrainConfig(model=str(bf16_backbone), train_jsonl=[str(data)], batch_size=4, max_steps=2,
                         learning_rate=1e-5, warmup_ratio=0.0, num_query_meta_tokens=2, num_document_meta_tokens=4,
                         bf16="false", save_steps=100, output_dir=str(tmp_path / "run"))
    train(config)
    trained = final_weights(tmp_path / "run")
    assert {t.dtype for t in trained.values() if t.is_floating_point()} == {torch.float32}
    start = load_file(bf16_backbone / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    moved = (trained[f"0.model.{name}"] != start[name].float()).float().mean()
    assert moved > 0.9


@pytest.mark.parametrize("declared, setting, expected", [
    (64, None, 64),  # the backbone's own sentence-transformers length, longer than the training length
    (200, None, 124),  # ... within the room the tiny BERT's 128 positions leave beside 4 meta tokens
    (8, None, 16),  # shorter than the training length: the training length stays
    (None, None, 16),  # declares none: the training length stays
    (64, 40, 40),  # an explicit setting wins
])
def test_the_saved_model_reads_the_backbones_own_length(tiny_bert_path, tmp_path, declared, setting, expected):
    """Trained on 16 tokens, saved to read as many as the backbone embeds as a sentence-transformers model."""
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_bert_path, backbone)
    if declared is not None:
        (backbone / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": declared}))
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    result = train(TrainConfig(model=str(backbone), train_jsonl=[str(data)], output_dir=str(tmp_path / "out"),
                               batch_size=4, max_steps=1, max_seq_length=16, inference_max_seq_length=setting,
                               num_query_meta_tokens=2, num_document_meta_tokens=4, save_steps=100))
    model = MetaEmbed.from_pretrained(result.model_path)
    assert model.max_seq_length == expected
    long_text = " ".join(f"word{i}" for i in range(300))
    appended = model.backbone.num_appended_meta_tokens("document")  # 3: the first vector is the mean (training's default)
    assert model.backbone.preprocess([long_text], task="document")["input_ids"].shape[1] == expected + appended


def test_an_inference_length_the_backbone_cannot_hold_is_refused_before_training(tiny_bert_path, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 8)
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "out"), batch_size=4,
                         max_steps=1, max_seq_length=16, inference_max_seq_length=200, num_query_meta_tokens=2,
                         num_document_meta_tokens=4)
    with pytest.raises(ValueError, match="max_seq_length 200 counts an item's own tokens.*at most 124"):
        train(config)
    assert not (tmp_path / "out" / "model").exists()
