"""Negatives across processes: a 2-process CPU (gloo) run under torchrun gives the loss and the updated
weights of a 1-process run on the concatenated batch; and, one level down, the MMR loss on all-gathered
documents gives every process the gradient of the 1-process loss for its own part."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

from metaembed import MetaEmbed
from metaembed.training import MMRLoss, train

WORLD_SIZE, LOCAL_BATCH = 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def dropout_free_copy(source: str, folder: Path) -> str:
    """Dropout draws differ between processes; the comparison needs a deterministic forward."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def settings(model: str, data: Path, output: Path, batch_size: int) -> dict:
    return {
        "model": model, "train_jsonl": [str(data)], "output_dir": str(output), "batch_size": batch_size,
        "max_steps": 2, "learning_rate": 0.001, "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 100,
        "num_query_meta_tokens": 4, "num_document_meta_tokens": 8, "num_negatives": 1, "gather_across_devices": True,
        "bf16": "false",  # an fp32 comparison: bf16 rounding depends on the batch's shape
    }


def step_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r and "step" in r]


def test_two_processes_equal_one_process_on_the_concatenated_batch(tiny_bert_path, tmp_path):
    model = dropout_free_copy(tiny_bert_path, tmp_path / "bert")
    data = tmp_path / "train.jsonl"
    rows = [{"query": f"topic {i} question", "positive": f"passage about topic {i}", "negatives": [f"other thing {i}"]}
            for i in range(8)]
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    # 8 rows: every step's global batch is the whole set, 2 x 4 or 1 x 8, whatever the shuffling; the loss is
    # a mean over the global batch's queries, so it does not depend on their order.
    two_config = tmp_path / "two.yaml"
    two_config.write_text(json.dumps(settings(model, data, tmp_path / "two", batch_size=4)))  # JSON is YAML
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "metaembed.training", str(two_config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train(settings(model, data, tmp_path / "one", batch_size=8))

    two_losses, one_losses = step_losses(tmp_path / "two"), step_losses(tmp_path / "one")
    assert len(two_losses) == len(one_losses) == 2
    # Step 2's loss is computed after the first update: it matches only if the update did.
    for a, b in zip(two_losses, one_losses):
        assert abs(a - b) < 1e-4 * max(1.0, abs(b)), (two_losses, one_losses)

    two_model = MetaEmbed.from_pretrained(str(tmp_path / "two" / "model")).state_dict()
    one_model = MetaEmbed.from_pretrained(str(tmp_path / "one" / "model")).state_dict()
    initial = MetaEmbed.from_backbone(model, 4, 8).state_dict()
    for name in ("0.query_meta_tokens", "0.document_meta_tokens"):
        assert not torch.equal(one_model[name], initial[name]), name
    assert set(two_model) == set(one_model)
    for name in one_model:  # Adam moves every weight by ~1e-3 a step: a wrong all-reduce shows far above 5e-5, while
        # float summation order (AVX2 and AMX kernels, one process or two) moves a weight by ~1e-5
        torch.testing.assert_close(two_model[name], one_model[name], atol=5e-5, rtol=1e-4, msg=name)


class _Budgets(torch.nn.Module):
    num_query_meta_tokens, num_document_meta_tokens = 4, 8


def _global_embeddings() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(WORLD_SIZE * LOCAL_BATCH, 4, 16), (WORLD_SIZE * LOCAL_BATCH, 8, 16), (WORLD_SIZE * LOCAL_BATCH, 8, 16)]
    return [F.normalize(torch.randn(*shape, generator=generator), dim=-1) for shape in shapes]


def _loss_and_gradients(queries, positives, negatives) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [tensor.clone().requires_grad_() for tensor in (queries, positives, negatives)]
    budgets = _Budgets()
    inner = MultiVectorMultipleNegativesRankingLoss(budgets, gather_across_devices=True)
    loss = MMRLoss(budgets, inner, groups=[(1, 1), (2, 4), (4, 8)]).loss_from_embeddings(leaves[0], leaves[1:])
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def _gloo_worker(rank: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = [tensor[rank * LOCAL_BATCH:(rank + 1) * LOCAL_BATCH] for tensor in _global_embeddings()]
        loss, gradients = _loss_and_gradients(*local)
        losses = [torch.zeros(()) for _ in range(WORLD_SIZE)]
        dist.all_gather(losses, loss)
        gathered = []
        for gradient in gradients:
            parts = [torch.zeros_like(gradient) for _ in range(WORLD_SIZE)]
            dist.all_gather(parts, gradient)
            gathered.append(torch.cat(parts))
        if rank == 0:
            torch.save({"losses": torch.stack(losses), "gradients": gathered}, result_file)
    finally:
        dist.destroy_process_group()


def test_gathered_documents_get_the_one_process_gradient(tmp_path):
    """DDP averages the processes' gradients, so each local-mean loss must give 1/W of the global-mean gradient
    for its own queries and documents (the documents' part summed over every process that scored them)."""
    result_file = tmp_path / "result.pt"  # spawn: a fork after an in-process training run can hang in OpenMP
    mp.start_processes(_gloo_worker, args=(str(tmp_path / "init"), str(result_file)), nprocs=WORLD_SIZE,
                       start_method="spawn")
    result = torch.load(result_file)
    loss, gradients = _loss_and_gradients(*_global_embeddings())
    torch.testing.assert_close(result["losses"].mean(), loss)
    assert not torch.allclose(result["losses"][0], result["losses"][1])
    for name, two, one in zip(["query", "positive", "negative"], result["gradients"], gradients):
        assert one.abs().max() > 0, name
        torch.testing.assert_close(two / WORLD_SIZE, one, atol=1e-6, rtol=1e-5, msg=name)
