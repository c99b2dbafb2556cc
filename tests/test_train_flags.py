"""Training settings from flags and YAML through transformers' ``HfArgumentParser``: parsed values, YAML round
trips (files of earlier runs included), flags over YAML, one-line errors, and the tie to sentence-transformers'
training arguments (``TRAINING_ARGUMENT_NAMES``, ``training_args``)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from typer.testing import CliRunner

from metaembed.cli import app
from metaembed.training.config import TRAINING_ARGUMENT_NAMES, TrainConfig
from metaembed.training.flags import config_from_args, train_parser


def test_flags_parse_into_typed_settings():
    config = config_from_args([
        "-m", "bb", "--out", "run", "--batch-size", "4", "--num_epochs", "2.5", "--groups", "1,1", "4,8",
        "--group_weights", "1", "0.5", "--lora", "--no_check_images", "--bf16", "false", "--loss", "cached",
        "--mmeb_subsets", "A=1,B=0.5", "--training_args", '{"adam_beta2": 0.98}', "--learning_rate", "3e-4",
        "--lora_target_modules", "q_proj", "v_proj", "--train_jsonl", "a.jsonl", "b.jsonl",
    ])
    assert (config.model, config.output_dir, config.batch_size, config.num_epochs) == ("bb", "run", 4, 2.5)
    assert config.groups == ["1,1", "4,8"] and config.group_weights == [1.0, 0.5]
    assert config.lora is True and config.check_images is False and config.bf16 == "false" and config.loss == "cached"
    assert config.mmeb_subsets == {"A": 1.0, "B": 0.5} and config.training_args == {"adam_beta2": 0.98}
    assert config.learning_rate == 3e-4 and config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.train_jsonl == ["a.jsonl", "b.jsonl"]
    assert config_from_args(["--lora", "false", "--mmeb_subsets", '{"A": 2}']).lora is False
    assert config_from_args([]) == TrainConfig()


def test_yaml_round_trip_and_flags_over_yaml(tmp_path):
    written = TrainConfig(model="bb", groups=["1,1", "2,4"], lora=True, mmeb_subsets={"A": 2.0}, max_steps=7,
                          training_args={"adam_beta2": 0.98}, lora_target_modules=["q_proj"])
    path = tmp_path / "train_config.yaml"
    written.save_yaml(path)
    assert TrainConfig.from_yaml(path) == written == config_from_args([str(path)])
    assert TrainConfig.from_dict(yaml.safe_load(path.read_text())) == written
    over = config_from_args([str(path), "--lora", "false", "--max_steps", "9", "-o", "elsewhere"])
    assert (over.lora, over.max_steps, over.output_dir) == (False, 9, "elsewhere")
    assert over.groups == written.groups and over.mmeb_subsets == {"A": 2.0}  # the rest comes from the file


def test_a_train_config_yaml_of_an_earlier_run_still_loads(tmp_path):
    """Files written before ``training_args`` existed (every other setting, the same names and values)."""
    earlier = {key: value for key, value in TrainConfig(model="bb").to_dict().items() if key != "training_args"}
    earlier.update(groups=["1,1", "16,64"], bf16=True, mmeb_subsets={})  # YAML's own true, as people write it
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(earlier, sort_keys=False))
    for config in (TrainConfig.from_yaml(path), config_from_args([str(path)])):
        assert config.bf16 == "true" and config.groups == ["1,1", "16,64"] and config.training_args == {}


def test_bad_settings_name_the_setting(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: bb\nbatchsize: 4\n")
    with pytest.raises(ValueError, match=r"unknown settings \['batchsize'\]; known settings"):
        config_from_args([str(path)])
    with pytest.raises(ValueError, match="unrecognized arguments: --batchsize"):
        config_from_args(["--batchsize", "4"])
    with pytest.raises(ValueError, match=r"loss must be one of \('plain', 'cached'\), got 'huge'"):
        config_from_args(["--loss", "huge"])
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        config_from_args(["--batch_size", "0"])
    with pytest.raises(ValueError, match=r"training_args: \['per_device_train_batch_size'\] are settings of their own "
                                         r"here; set \['batch_size'\] instead"):
        TrainConfig(training_args={"per_device_train_batch_size": 8})
    with pytest.raises(ValueError, match="training_args: 'adam' is neither a mapping nor JSON text"):
        config_from_args(["--training_args", "adam"])


def test_cli_errors_are_one_line_and_help_is_the_settings_help():
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--batch_size", "x"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "error: argument --batch_size/--batch-size: invalid int value: 'x' (see 'metaembed train --help')"]
    help_text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for shown in ("usage: metaembed train", "-m MODEL", "-o OUTPUT_DIR, --out OUTPUT_DIR", "--no_check_images",
                  "--loss LOSS", "--groups GROUPS [GROUPS ...]", "Hard negatives per row (the paper: one)", "(default: 32)"):
        assert shown in help_text, shown


def test_training_argument_names_are_sentence_transformers_fields():
    """Each setting tied to the trainer names a real ``MultiVectorEncoderTrainingArguments`` field, and
    ``training_args`` reaches the arguments as given (and refuses names that are not fields)."""
    from sentence_transformers import MultiVectorEncoderTrainingArguments

    from metaembed.training.run import check_training_args

    known = {f.name for f in dataclasses.fields(MultiVectorEncoderTrainingArguments)}
    assert set(TRAINING_ARGUMENT_NAMES.values()) <= known
    assert set(TRAINING_ARGUMENT_NAMES) <= {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ValueError, match=r"\['adam_beta3'\] are not MultiVectorEncoderTrainingArguments settings"):
        check_training_args(TrainConfig(training_args={"adam_beta3": 0.9}))


def test_training_arguments_carry_the_settings(tiny_bert_path, tmp_path):
    from metaembed.training.run import build_model, training_arguments

    config = TrainConfig(model=tiny_bert_path, output_dir=str(tmp_path), batch_size=3, num_epochs=2, lr_scheduler="cosine",
                         gradient_checkpointing=True, save_total_limit=2, training_args={"adam_beta2": 0.98})
    args = training_arguments(config, build_model(TrainConfig(model=tiny_bert_path, num_query_meta_tokens=2,
                                                              num_document_meta_tokens=4)))
    assert (args.per_device_train_batch_size, args.num_train_epochs, args.adam_beta2) == (3, 2, 0.98)
    assert args.lr_scheduler_type.value == "cosine" and args.activation_checkpointing is True
    assert args.save_total_limit == 2 and args.learning_rate == 2e-5 and args.output_dir == str(tmp_path)


def test_parser_is_the_ecosystems():
    from transformers import HfArgumentParser

    assert isinstance(train_parser(), HfArgumentParser)
