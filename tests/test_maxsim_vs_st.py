"""``metaembed.maxsim`` gives sentence-transformers' ``util.maxsim`` scores on the budget prefixes (the two are
measured against each other in benchmarks/maxsim_vs_st), in fp32 and in bf16, blocked or not."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers.util import maxsim as st_maxsim

from metaembed import maxsim


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("budget", [(1, 1), (4, 8), (16, 64)])
def test_maxsim_equals_sentence_transformers_on_prefixes(dtype, budget):
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(5, 16, 32, generator=generator), dim=-1).to(dtype)
    documents = torch.nn.functional.normalize(torch.randn(40, 64, 32, generator=generator), dim=-1).to(dtype)
    r_q, r_c = budget
    theirs = st_maxsim(queries[:, :r_q], documents[:, :r_c])
    tolerance = 1e-5 * r_q if dtype == torch.float32 else 1e-2 * r_q
    for block_size in (None, 7):
        ours = maxsim(queries, documents, r_q, r_c, block_size=block_size)
        assert ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, atol=tolerance, rtol=0)
    # A bf16 index scored in fp32 (metaembed eval's default) is ST's score of the fp32 copies.
    exact = maxsim(queries, documents, r_q, r_c, dtype=torch.float32)
    torch.testing.assert_close(exact, st_maxsim(queries[:, :r_q].float(), documents[:, :r_c].float()), atol=1e-5 * r_q, rtol=0)
