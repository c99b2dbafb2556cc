"""Line meta attention: vector v >= 2 reads a document's line v - 1 (document_lines), its tokens also read apart
(document_segments)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaembed import MetaEmbed
from metaembed.model.meta_segments import line_segment_ids, meta_segments, segment_attention
from metaembed.model.meta_windows import segmented_sides, windowed_sides
from metaembed.training import TrainConfig

R_Q, R_C = 3, 6
DOCUMENT = "alpha beta gamma\n\nclass Foo: does foo things\nbar(x): returns the bar of x"


def test_line_ids_come_from_offsets(tiny_bert_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    texts = ["a b\n\n  \nc d\ne", "x"]
    encoded = tokenizer(texts, return_offsets_mapping=True, padding=True, return_tensors="pt")
    ids = line_segment_ids(texts, encoded["offset_mapping"])
    # [CLS] a b c d e [SEP]: blank and whitespace-only lines are not lines; special tokens and padding are 0.
    assert ids.tolist() == [[0, 1, 1, 2, 2, 3, 0], [0, 1, 0, 0, 0, 0, 0]]


def test_meta_tokens_take_lines_in_order():
    lines = torch.tensor([3, 1, 0])
    # The paper's layout (first_ordinal 1): meta 1 is the whole item, then lines 1, 2, ..., and past the last line
    # the lines again from line 1; 0 = the whole item (an item without lines: every meta token).
    assert meta_segments(6, lines, first_ordinal=1).tolist() == [[0, 1, 2, 3, 1, 2], [0, 1, 1, 1, 1, 1], [0] * 6]
    # With a mean first vector the meta tokens give vectors 2.. and start at line 1.
    assert meta_segments(5, lines, first_ordinal=2).tolist() == [[1, 2, 3, 1, 2], [1, 1, 1, 1, 1], [0] * 5]


def test_attention_mask_by_hand():
    # [CLS] a a b [SEP] meta(line 1) meta(line 2) meta(no line 3: line 1 again) pad
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0]])
    segments = torch.tensor([[0, 1, 1, 2, 0, 0, 0, 0, 0]])
    allowed, reads = segment_attention(mask, torch.tensor([[5, 6, 7]]), segments, causal=False, first_ordinal=2,
                                       apart=True)
    expected = torch.tensor([
        [1, 1, 1, 1, 1, 0, 0, 0, 0],  # [CLS] reads every own token
        [1, 1, 1, 0, 1, 0, 0, 0, 0],  # line 1 reads itself and the special tokens
        [1, 1, 1, 0, 1, 0, 0, 0, 0],
        [1, 0, 0, 1, 1, 0, 0, 0, 0],  # line 2
        [1, 1, 1, 1, 1, 0, 0, 0, 0],  # [SEP]
        [1, 1, 1, 0, 1, 1, 0, 0, 0],  # meta for line 1: line 1, the special tokens, itself
        [1, 0, 0, 1, 1, 0, 1, 0, 0],  # meta for line 2
        [1, 1, 1, 0, 1, 0, 0, 1, 0],  # a third meta token, no third line: line 1 again
        [0, 0, 0, 0, 0, 0, 0, 0, 1],  # padding: itself only
    ])
    assert torch.equal(allowed[0, 0].int(), expected)
    assert reads[0].int().tolist() == [[0, 1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0],
                                       [0, 1, 1, 0, 0, 0, 0, 0, 0]]
    causal, _ = segment_attention(mask, torch.tensor([[5, 6, 7]]), segments, causal=True, first_ordinal=2, apart=True)
    assert causal[0, 0, 2].int().tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert causal[0, 0, 3].int().tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert torch.equal(causal[0, 0, 5:], allowed[0, 0, 5:])
    # document_lines: the own tokens read the whole item (never the meta tokens); the meta tokens as before.
    whole, whole_reads = segment_attention(mask, torch.tensor([[5, 6, 7]]), segments, causal=False, first_ordinal=2,
                                           apart=False)
    assert torch.equal(whole[0, 0, :5].int(), torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0]] * 5))
    assert torch.equal(whole[0, 0, 5:], allowed[0, 0, 5:]) and torch.equal(whole_reads, reads)


def test_the_mode_is_a_setting():
    for mode in ("document_lines", "document_segments"):
        assert segmented_sides(mode) == ("document",) and windowed_sides(mode) == ()
        TrainConfig(model="m", meta_attention=mode).validate()
    assert segmented_sides("full") == () and segmented_sides("document_windows") == ()
    with pytest.raises(ValueError, match="meta_attention must be one of full, document_windows, windows, document_lines, "
                                         "document_segments, document_regions or auto, got 'lines'"):
        segmented_sides("lines")


def test_auto_reads_lines_where_the_backbone_can(tiny_bert_path, tiny_llama_path, tiny_composed_vlm_path, tmp_path):
    """meta_attention "auto": document_lines for a text backbone (encoder or decoder), full for a vision-language
    model; the saved model records the layout chosen, and its vectors are those of document_lines itself."""
    TrainConfig(model="m", meta_attention="auto").validate()
    with pytest.raises(ValueError, match="resolved when the backbone is loaded"):
        windowed_sides("auto")
    for path in (tiny_bert_path, tiny_llama_path):
        auto = MetaEmbed.from_backbone(path, R_Q, R_C, meta_attention="auto", first_vector="mean", device="cpu").eval()
        assert auto.backbone.meta_attention == "document_lines"
        explicit = MetaEmbed.from_backbone(path, R_Q, R_C, meta_attention="document_lines", first_vector="mean",
                                           device="cpu").eval()
        torch.testing.assert_close(auto.encode_document([DOCUMENT]), explicit.encode_document([DOCUMENT]))
    auto.save_pretrained(str(tmp_path / "saved"))
    assert MetaEmbed.from_pretrained(str(tmp_path / "saved")).backbone.meta_attention == "document_lines"
    vlm = MetaEmbed.from_backbone(tiny_composed_vlm_path, R_Q, R_C, meta_attention="auto", device="cpu")
    assert vlm.backbone.meta_attention == "full"


@pytest.fixture(scope="module", params=[(path, mode) for path in ("tiny_bert_path", "tiny_llama_path")
                                        for mode in ("document_lines", "document_segments")])
def segmented(request) -> MetaEmbed:
    path, mode = request.param
    return MetaEmbed.from_backbone(request.getfixturevalue(path), R_Q, R_C, meta_attention=mode,
                                   first_vector="mean", meta_residual=True, device="cpu").eval()


def line_layout(tokenizer) -> tuple[list[int], torch.Tensor]:
    """DOCUMENT's ids with its lines tokenized one by one ([CLS] line 1 line 2 line 3 [SEP]) and each token's line."""
    ids, segment = [tokenizer.cls_token_id], [0]
    for number, line in enumerate((line for line in DOCUMENT.splitlines() if line.strip()), start=1):
        line_ids = tokenizer(line, add_special_tokens=False)["input_ids"]
        ids, segment = ids + line_ids, segment + [number] * len(line_ids)
    return ids + [tokenizer.sep_token_id], torch.tensor([segment + [0]])


def expected_vectors(states: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Vector 1 the mean of every own token, vector v the mean of line v - 1, the lines again from line 1 past them."""
    lines = int(segment.max())
    expected = [states.mean(dim=0)] + [states[segment[0] == 1 + (v - 2) % lines].mean(dim=0) for v in range(2, R_C + 1)]
    return F.normalize(torch.stack(expected), dim=-1)


def test_untrained_line_vectors_are_line_means_of_the_backbone(tiny_bert_path):
    """document_lines with the residual at zero: the item's token states are the plain backbone's, and vector v the
    mean of line v - 1's states."""
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="document_lines", first_vector="mean",
                                    meta_residual=True, device="cpu").eval()
    ids, segment = line_layout(model.backbone.tokenizer)
    with torch.no_grad():
        states = model.backbone.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    torch.testing.assert_close(model.encode_document([DOCUMENT])[0], expected_vectors(states, segment), atol=1e-5, rtol=0)


def test_untrained_line_vectors_are_the_lines_read_apart(tiny_bert_path):
    """With the residual at zero, vector 1 is the mean of every own token and vector v the mean of line v - 1's
    tokens, each line encoded with attention to itself and the special tokens only: checked against the backbone run
    by hand on the lines tokenized one by one."""
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="document_segments", first_vector="mean",
                                    meta_residual=True, device="cpu").eval()
    ids, segment = line_layout(model.backbone.tokenizer)
    special = segment == 0
    allowed = (segment.unsqueeze(2) == segment.unsqueeze(1)) | special.unsqueeze(1) | special.unsqueeze(2)
    with torch.no_grad():
        states = model.backbone.model(input_ids=torch.tensor([ids]), attention_mask=allowed.unsqueeze(1)).last_hidden_state[0]
    torch.testing.assert_close(model.encode_document([DOCUMENT])[0], expected_vectors(states, segment), atol=1e-5, rtol=0)


def test_padding_invariance_and_prefixes(segmented: MetaEmbed):
    alone = segmented.encode_document([DOCUMENT])
    batch = segmented.encode_document(["one line", DOCUMENT, "x\ny"])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(segmented.encode_document([DOCUMENT], budget=3), alone[:, :3], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["document_lines", "document_segments"])
def test_a_line_vector_reads_only_its_line(tiny_llama_path, mode):
    """In a decoder nothing reaches line 1 from line 2 (the BOS token precedes both): changing line 2 leaves vector 2
    as it was and moves vector 3 (line 2) and vector 1 (the whole item)."""
    model = MetaEmbed.from_backbone(tiny_llama_path, R_Q, R_C, meta_attention=mode, first_vector="mean",
                                    meta_residual=True, device="cpu").eval()
    # A trained residual, so the meta tokens' own states count too.
    torch.nn.init.normal_(model[1].meta_residual.weight, std=0.05, generator=torch.Generator().manual_seed(0))
    first, second = model.encode_document(["abc def\nghi jkl", "abc def\nghi jkz"])
    torch.testing.assert_close(first[1], second[1], atol=1e-6, rtol=0)
    for index in (0, 2):
        assert (first[index] - second[index]).abs().max() > 1e-4


def test_queries_read_as_before(tiny_bert_path):
    full = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, first_vector="mean", meta_residual=True, device="cpu").eval()
    lines = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="document_segments", first_vector="mean",
                                    meta_residual=True, device="cpu").eval()
    torch.testing.assert_close(lines.encode_query(["foo\nthings"]), full.encode_query(["foo\nthings"]), atol=1e-6, rtol=0)
    assert (lines.encode_document([DOCUMENT]) - full.encode_document([DOCUMENT])).abs().max() > 1e-3


def test_save_and_load_keep_the_lines(segmented: MetaEmbed, tmp_path):
    segmented.save_pretrained(str(tmp_path / "model"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "model"), device="cpu").eval()
    assert loaded.backbone.meta_attention == segmented.backbone.meta_attention
    torch.testing.assert_close(loaded.encode_document([DOCUMENT]), segmented.encode_document([DOCUMENT]), atol=1e-6, rtol=0)


def test_gradients_reach_every_line_meta_token(segmented: MetaEmbed):
    """Through a trained (non-zero) residual every appended meta token learns, whether it reads a line or the whole."""
    residual = segmented[1].meta_residual.weight
    saved = residual.detach().clone()
    torch.nn.init.normal_(residual, std=0.05, generator=torch.Generator().manual_seed(0))
    segmented.train()
    try:
        features = segmented.preprocess([DOCUMENT, "a\nb\nc\nd\ne"], task="document")
        vectors = segmented(features, task="document")["token_embeddings"]
        (vectors * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        grad = segmented[1].meta_residual.weight.grad
        assert grad is not None and grad.abs().sum() > 1e-3
        token_grad = segmented.backbone.document_meta_tokens.grad
        appended = segmented.backbone.num_appended_meta_tokens("document")
        assert token_grad is not None and (token_grad[:appended].abs().sum(dim=1) > 1e-6).all()
    finally:
        with torch.no_grad():
            residual.copy_(saved)
        segmented.zero_grad(set_to_none=True)
        segmented.eval()


def test_a_vision_language_model_is_refused(tiny_qwen2_vl_path):
    with pytest.raises(ValueError, match="meta_attention='document_lines': .* is a vision-language model.*text backbones only"):
        MetaEmbed.from_backbone(tiny_qwen2_vl_path, R_Q, R_C, meta_attention="document_lines", device="cpu")
