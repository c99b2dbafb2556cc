"""MMRLoss against a naive per-group loop, and the cached (GradCache) mode against the plain one."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.multi_vector_encoder.losses import CachedMultiVectorMultipleNegativesRankingLoss

import metaembed
from metaembed import MetaEmbed
from metaembed.budgets import Budget
from metaembed.training import MMRLoss

QUERIES = ["text editor for programmers", "compress files", "parse json quickly", "red bicycle", "capital of france"]
POSITIVES = [
    "a text editor for programmers with syntax highlighting",
    "gzip compresses files using Lempel-Ziv coding",
    "a library for parsing json documents quickly",
    "image of a red bicycle leaning on a wall",
    "paris is the capital of france",
]
NEGATIVES = [
    "a spreadsheet program",
    "an archive manager that cannot compress",
    "an xml parser written in c",
    "a blue car parked outside",
    "berlin is the capital of germany",
]


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=16, num_document_meta_tokens=64)
    model.eval()  # no dropout: two forwards of the same batch must agree exactly
    return model


def features(model: MetaEmbed, with_negatives: bool) -> list[dict]:
    columns = [model.preprocess(QUERIES, task="query"), model.preprocess(POSITIVES, task="document")]
    if with_negatives:
        columns.append(model.preprocess(NEGATIVES, task="document"))
    for index, column in enumerate(columns):
        column["task"] = "query" if index == 0 else "document"
    return columns


def naive_mmr_loss(model, columns, groups, weights, temperature, normalize_by_query) -> torch.Tensor:
    """The definition, group by group: a separate MaxSim at each budget, an InfoNCE each, a weighted mean."""
    queries = model(copy.copy(columns[0]), task="query")["token_embeddings"]
    doc_columns = [model(copy.copy(column), task="document")["token_embeddings"] for column in columns[1:]]
    batch, per_row = queries.shape[0], len(doc_columns)
    documents = torch.stack(doc_columns, dim=1).flatten(0, 1)  # row b's column n at b * per_row + n
    labels = torch.arange(batch) * per_row
    total = torch.zeros(())
    for (r_q, r_c), weight in zip(groups, weights):
        scores = metaembed.maxsim(
            queries, documents, query_budget=r_q, document_budget=r_c, normalize_by_query=normalize_by_query
        )
        total = total + weight * F.cross_entropy(scores / temperature, labels)
    return total / len(groups)


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def run(model, loss_fn, columns) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn([copy.copy(column) for column in columns])
    loss.backward()
    return loss.detach(), gradients(model)


def assert_same_gradients(expected: dict, actual: dict, atol: float = 1e-5) -> None:
    assert expected.keys() == actual.keys()
    assert "0.query_meta_tokens" in actual and "0.document_meta_tokens" in actual
    for name in expected:
        # fp32 sums over many tokens: compare to 1e-5 of each gradient's own scale.
        scale = max(1.0, float(expected[name].abs().max()))
        difference = float((actual[name] - expected[name]).abs().max())
        assert difference <= atol * scale, f"{name}: gradients differ by {difference} (scale {scale})"
    assert any(float(grad.abs().max()) > 1e-4 for grad in actual.values())


@pytest.mark.parametrize(
    "with_negatives, temperature, normalize_by_query, weights",
    [(True, 0.03, False, None), (False, 0.5, True, [1.0, 0.5, 2.0, 0.0, 3.0])],
)
def test_mmr_loss_equals_naive_per_group_loop(model, with_negatives, temperature, normalize_by_query, weights):
    columns = features(model, with_negatives)
    mmr = MMRLoss(model, temperature=temperature, normalize_by_query=normalize_by_query, weights=weights)
    assert mmr.groups == [Budget(1, 1), Budget(2, 4), Budget(4, 8), Budget(8, 16), Budget(16, 64)]
    group_weights = weights or [1.0] * 5

    loss, grads = run(model, mmr, columns)
    expected_loss, expected_grads = run(
        model, lambda cols: naive_mmr_loss(model, cols, mmr.groups, group_weights, temperature, normalize_by_query), columns
    )
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert loss > 0
    assert_same_gradients(expected_grads, grads)
    # Every group's value is logged, and the weighted mean of those is the loss.
    logged = mmr.last_group_losses
    assert list(logged) == ["loss_1x1", "loss_2x4", "loss_4x8", "loss_8x16", "loss_16x64"]
    recombined = sum(w * float(logged[key]) for w, key in zip(group_weights, logged)) / 5
    assert recombined == pytest.approx(float(loss), rel=1e-5)


def test_groups_clip_to_the_model_and_settings_are_checked(tiny_bert_path):
    small = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    assert MMRLoss(small).groups == [Budget(1, 1), Budget(2, 4), Budget(4, 8)]
    assert MMRLoss(small, groups=["2,2", (9, 9)]).groups == [Budget(2, 2), Budget(4, 8)]
    with pytest.raises(ValueError, match="3 group weights for 2 groups"):
        MMRLoss(small, groups=[(1, 1), (4, 8)], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="temperature must be positive"):
        MMRLoss(small, temperature=0)


@pytest.mark.parametrize("with_negatives", [True, False])
def test_cached_mode_equals_uncached(model, with_negatives):
    columns = features(model, with_negatives)
    plain = MMRLoss(model)
    cached = MMRLoss(model, loss=CachedMultiVectorMultipleNegativesRankingLoss(model, mini_batch_size=2))
    assert cached.uses_gradient_cache and not plain.uses_gradient_cache

    loss, grads = run(model, plain, columns)
    cached_loss, cached_grads = run(model, cached, columns)
    torch.testing.assert_close(cached_loss, loss, atol=1e-5, rtol=1e-5)
    assert_same_gradients(grads, cached_grads)
    for key, value in plain.last_group_losses.items():
        torch.testing.assert_close(cached.last_group_losses[key], value, atol=1e-5, rtol=1e-5)


def test_small_groups_reuse_the_one_similarity(model):
    """A group's loss depends only on its own prefixes: changing vector 2+ leaves the (1,1) loss alone."""
    mmr = MMRLoss(model)
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(4, 16, 32), dim=-1)
    documents = F.normalize(torch.randn(4, 64, 32), dim=-1)
    mmr.loss_from_embeddings(queries, [documents])
    first = dict(mmr.last_group_losses)
    queries[:, 1:] = F.normalize(torch.randn(4, 15, 32), dim=-1)
    documents[:, 1:] = F.normalize(torch.randn(4, 63, 32), dim=-1)
    mmr.loss_from_embeddings(queries, [documents])
    assert mmr.last_group_losses["loss_1x1"] == first["loss_1x1"]
    assert mmr.last_group_losses["loss_16x64"] != first["loss_16x64"]


def test_loss_is_fp32_under_bf16_autocast(model):
    """bf16 mixed precision speeds the backbone up; the MaxSim logits stay fp32 (bf16 would shift them ~0.1)."""
    mmr = MMRLoss(model)
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(6, 16, 32), dim=-1)
    documents = [F.normalize(torch.randn(6, 64, 32), dim=-1) for _ in range(2)]
    expected = mmr.loss_from_embeddings(queries, documents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = mmr.loss_from_embeddings(queries, documents)
        bf16_inputs = mmr.loss_from_embeddings(queries.bfloat16(), [d.bfloat16() for d in documents])
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, atol=1e-6, rtol=1e-6)
    # bf16 embeddings (what a bf16 backbone returns) are only rounded once, on the way in.
    rounded = mmr.loss_from_embeddings(queries.bfloat16().float(), [d.bfloat16().float() for d in documents])
    torch.testing.assert_close(bf16_inputs, rounded, atol=1e-6, rtol=1e-6)


def _document_group_gradients(queries, documents, nesting):
    """Gradients of the (1,4) group's summed scores, groups (1,1) and (1,4), wrt queries and documents."""
    from metaembed.training.mmr_loss import mmr_group_scores

    queries, documents = queries.clone().requires_grad_(), documents.clone().requires_grad_()
    scores = mmr_group_scores(queries, documents, [Budget(1, 1), Budget(1, 4)], normalize_by_query=False, nesting=nesting)
    scores[1].sum().backward()
    return scores, queries.grad, documents.grad


def test_boosted_nesting_keeps_the_scores_and_trains_only_what_the_smaller_group_lacks():
    e = torch.eye(8)
    queries = torch.nn.functional.normalize(torch.stack([e[0] + 0.1 * e[5], e[0] + 0.1 * e[6]]), dim=-1)[:, None]  # (2, 1, 8)
    # Every document's best vector for these queries is its first: the (1,1) group already has it.
    first_best = torch.stack([torch.stack([e[0], e[1], e[2], e[3]]), torch.stack([e[0] + e[4], e[2], e[3], e[1]])])
    first_best = torch.nn.functional.normalize(first_best, dim=-1)
    shared, shared_q, shared_d = _document_group_gradients(queries, first_best, "shared")
    boosted, boosted_q, boosted_d = _document_group_gradients(queries, first_best, "boosted")
    for s, b in zip(shared, boosted):
        assert torch.equal(s, b)  # the same scores at every group
    assert shared_q.abs().max() > 0.5 and shared_d[:, 0].abs().max() > 0.5
    assert torch.equal(boosted_q, torch.zeros_like(boosted_q)) and torch.equal(boosted_d, torch.zeros_like(boosted_d))
    # A document whose best vector is a later one: that vector (and the query) learn exactly as in the paper's loss.
    later_best = first_best[:, [1, 0, 2, 3]]
    _, shared_q, shared_d = _document_group_gradients(queries, later_best, "shared")
    _, boosted_q, boosted_d = _document_group_gradients(queries, later_best, "boosted")
    assert torch.equal(boosted_q, shared_q) and torch.equal(boosted_d, shared_d) and boosted_d[:, 1].abs().max() > 0.5


def test_boosted_loss_has_the_shared_value_and_bad_nestings_are_named(model, tiny_bert_path, tmp_path):
    columns = features(model, with_negatives=True)
    shared = MMRLoss(model)([copy.copy(c) for c in columns]).detach()
    boosted = MMRLoss(model, nesting="boosted")([copy.copy(c) for c in columns]).detach()
    assert torch.allclose(shared, boosted, atol=1e-6)
    assert MMRLoss(model, nesting="boosted").get_config_dict()["nesting"] == "boosted"
    with pytest.raises(ValueError, match="nesting must be one of shared, boosted, got 'nested'"):
        MMRLoss(model, nesting="nested")
    from metaembed.training import TrainConfig

    with pytest.raises(ValueError, match="mmr_nesting must be one of shared, boosted"):
        TrainConfig(model=tiny_bert_path, train_jsonl=["x.jsonl"], output_dir=str(tmp_path), mmr_nesting="both").validate()


def test_only_largest_is_the_largest_groups_loss_alone_and_switches_back(model):
    columns = features(model, with_negatives=True)
    mmr = MMRLoss(model, weights=[1.0, 2.0, 1.0, 1.0, 3.0])
    everything = mmr([copy.copy(c) for c in columns]).detach()
    logged = {name: value.item() for name, value in mmr.last_group_losses.items()}
    largest_alone = MMRLoss(model, groups=["16,64"])([copy.copy(c) for c in columns]).detach()
    mmr.only_largest = True
    assert mmr.active_weights() == [0.0, 0.0, 0.0, 0.0, 5.0]
    alone = mmr([copy.copy(c) for c in columns]).detach()
    torch.testing.assert_close(alone, largest_alone)
    assert alone.item() == pytest.approx(logged["loss_16x64"], rel=1e-5)
    assert not torch.allclose(alone, everything)  # the test would pass vacuously if the groups agreed
    assert list(mmr.last_group_losses) == ["loss_1x1", "loss_2x4", "loss_4x8", "loss_8x16", "loss_16x64"]  # still logged
    mmr.only_largest = False
    torch.testing.assert_close(mmr([copy.copy(c) for c in columns]).detach(), everything)
    assert mmr.active_weights() == [1.0, 2.0, 1.0, 1.0, 3.0]


def test_training_runs_the_largest_group_alone_for_its_first_steps(tiny_bert_path, tmp_path, one_thread):
    import json

    from metaembed.training import TrainConfig, train

    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"query": q, "positive": d}) + "\n" for q, d in zip(QUERIES, POSITIVES)))
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(rows)], output_dir=str(tmp_path / "run"),
                         num_query_meta_tokens=4, num_document_meta_tokens=8, groups=["1,1", "2,4", "4,8"],
                         largest_group_first_steps=2, batch_size=5, max_steps=4, learning_rate=1e-3,
                         num_negatives=0, save_steps=1000, logging_steps=1, bf16="false", no_duplicates=False)
    train(config)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = {record["step"]: record for record in logs if "loss_4x8" in record and "loss" in record}
    assert sorted(steps) == [1, 2, 3, 4]
    for step, record in steps.items():
        groups = [record["loss_1x1"], record["loss_2x4"], record["loss_4x8"]]
        expected = record["loss_4x8"] if step <= 2 else sum(groups) / 3
        assert record["loss"] == pytest.approx(expected, rel=1e-3), (step, record)
    assert steps[3]["loss"] != pytest.approx(steps[3]["loss_4x8"], rel=1e-3)  # the switch is visible
    with pytest.raises(ValueError, match="largest_group_first_steps must be >= 0, got -1"):
        TrainConfig(model=tiny_bert_path, output_dir=str(tmp_path), largest_group_first_steps=-1).validate()
