"""Property tests of hjepa.models (chapters 02-04): pooling, token dropping, per-block rows."""
import torch
from hypothesis import given, settings, strategies as st

from hjepa.models import Predictor, ViTEncoder, pool_levels


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 3), w=st.integers(1, 3), levels=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_pooled_cell_is_region_mean(h, w, levels, seed):
    s = 2 ** (levels - 1)
    H, W = h * s, w * s
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(2, H * W, 3, generator=g, dtype=torch.float64)
    maps = pool_levels([f] * levels, (H, W))
    grid = f.view(2, H, W, 3)
    for l, m in enumerate(maps):
        c = 2 ** l
        cell = int(torch.randint(0, (H // c) * (W // c), (1,), generator=g))
        r, q = divmod(cell, W // c)
        torch.testing.assert_close(m[:, cell], grid[:, r * c:(r + 1) * c, q * c:(q + 1) * c].mean((1, 2)))


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 16), seed=st.integers(0, 10_000))
def test_dropped_tokens_equal_attention_restricted_to_kept(n, seed):
    "Encoding only the kept tokens equals encoding them in a padded batch whose padding is masked out."
    torch.manual_seed(seed)
    e = ViTEncoder(16, 4, 16, 1, 2).eval()
    x = torch.randn(1, 3, 16, 16)
    keep = torch.randperm(16)[:n].sort().values[None]
    pad = torch.cat([keep, torch.zeros(1, 16 - n, dtype=torch.long)], 1)
    valid = torch.arange(16)[None] < n
    with torch.no_grad():
        torch.testing.assert_close(e(x, keep=pad, keep_valid=valid)[:, :n], e(x, keep=keep), atol=1e-5, rtol=1e-5)


@settings(max_examples=10, deadline=None)
@given(M=st.lists(st.integers(1, 3), min_size=1, max_size=3), seed=st.integers(0, 10_000))
def test_per_block_rows_are_independent(M, seed):
    "In per-block mode, the predictions of row m depend only on the blocks placed in row m."
    torch.manual_seed(seed)
    L = len(M)
    P = Predictor(16, 8, 1, 2, grid=(8, 8), n_levels=L).eval()
    ctx, idx = torch.randn(2, 5, 16), torch.randperm(64)[:5].sort().values.expand(2, 5)
    tg = [torch.randint(0, (8 // 2 ** l) ** 2, (2, m, 2)) for l, m in enumerate(M)]
    with torch.no_grad():
        out = P(ctx, idx, tg, (8, 8))
        m = max(M) - 1                      # the last row: levels with exactly max(M) blocks
        alone = P(ctx, idx, [t[:, m:m + 1] for t in tg], (8, 8))
    for l, t in enumerate(tg):
        if t.shape[1] > m:
            torch.testing.assert_close(out[l][:, 2 * m:2 * m + 2], alone[l], atol=1e-5, rtol=1e-5)
