"""Property-based tests of hjepa.masks over random valid (and invalid) masker configurations."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hjepa.config import ConfigError
from hjepa.config import max_levels as _max_levels
from hjepa.masks import BlockMasker, Masks, _upsample


@st.composite
def configs(draw, max_side=12, max_target_scale=1.0, contexts=("ijepa", "guaranteed", "official")):
    "Keyword arguments of a valid BlockMasker: aspect ranges contain the grid's own aspect, so every block fits."
    H, W = draw(st.integers(2, max_side)), draw(st.integers(2, max_side))
    L = draw(st.integers(1, _max_levels(H, W)))
    r = H / W
    ts_lo = draw(st.floats(0.02, min(0.5, max_target_scale)))
    cs_lo = draw(st.floats(0.3, 1.0))
    return dict(
        grid=(H, W), n_levels=L,
        n_targets=draw(st.lists(st.integers(1, 4), min_size=1, max_size=1) | st.lists(st.integers(1, 4), min_size=L, max_size=L)),
        target_scale=(ts_lo, draw(st.floats(ts_lo, min(max_target_scale, ts_lo + 0.3)))),
        target_aspect=(r * draw(st.floats(0.5, 1.0)), r * draw(st.floats(1.0, 2.0))),
        context_scale=(cs_lo, draw(st.floats(cs_lo, 1.0))),
        context_aspect=(r * draw(st.floats(0.7, 1.0)), r * draw(st.floats(1.0, 1.4))),
        allow_overlap=draw(st.booleans()),
        context=draw(st.sampled_from(contexts)),
        min_context=draw(st.floats(0.05, 0.6)),
        min_keep=draw(st.integers(1, min(8, H * W))),
        max_tries=draw(st.integers(1, 20)),
        seed=draw(st.integers(0, 2**31)),
    )


def check_contract(masker: BlockMasker, m: Masks, B: int):
    "DESIGN.md's Masks contract for a batch of B samples."
    H, W = masker.grid
    assert m.grid == (H, W) and m.batch_size == B and m.n_levels == masker.n_levels and m.context_valid is None
    assert m.context.dtype == torch.int64 and m.context.shape[0] == B
    assert ((m.context >= 0) & (m.context < H * W)).all()
    assert (m.context.diff(dim=1) > 0).all(), "context indices must be sorted and unique"
    assert m.context.shape[1] >= masker.need
    if masker.context == "guaranteed":
        assert m.context.shape[1] / (H * W) >= masker.min_context - 1e-9
    union = torch.zeros(B, H, W, dtype=torch.bool)
    for l, t in enumerate(m.targets):
        h, w = H >> l, W >> l
        assert m.level_grid(l) == (h, w)
        assert t.dtype == torch.int64 and t.shape[:2] == (B, masker.n_targets[l])
        assert ((t >= 0) & (t < h * w)).all()
        tm = m.target_mask(l)
        assert (tm.flatten(2).sum(2) == t.shape[2]).all(), "a block's K_l indices must be distinct cells"
        rows, cols = tm.any(3), tm.any(2)  # a block is a rectangle: its cells = (rows it touches) x (cols it touches)
        assert (rows.sum(2) * cols.sum(2) == t.shape[2]).all()
        union |= _upsample(tm.any(1), 2 ** l)
    if not masker.allow_overlap and masker.stats["overlapped"] == 0:
        assert not (m.context_mask() & union).any(), "context and targets overlap"


@settings(max_examples=30, deadline=None)
@given(kw=configs(), B=st.integers(1, 16))
def test_masks_contract_and_determinism(kw, B):
    a, b = BlockMasker(**kw), BlockMasker(**kw)
    for _ in range(2):
        ma, mb = a(B), b(B)
        check_contract(a, ma, B)
        assert torch.equal(ma.context, mb.context) and all(torch.equal(x, y) for x, y in zip(ma.targets, mb.targets))
    # a relaxation, when needed, is counted
    assert a.stats["calls"] == 2 and a.stats["samples"] == 2 * B
    assert a.stats["overlapped"] <= a.stats["filled"]


@settings(max_examples=10, deadline=None, derandomize=True)
@given(kw=configs(max_side=8, max_target_scale=0.3, contexts=("ijepa", "guaranteed")))  # 'official' skips the last row/column
def test_every_cell_reachable(kw):
    "Over many draws every cell, last row and column included, is context sometimes and a target of every level sometimes."
    masker, g = BlockMasker(**kw), torch.Generator().manual_seed(0)
    H, W = masker.grid
    ctx = torch.zeros(H, W)
    tgt = [torch.zeros(lg) for lg in masker.level_grids]
    for _ in range(600):
        m = masker(4, generator=g)
        ctx += m.context_mask().sum(0)
        for l in range(masker.n_levels): tgt[l] += m.target_mask(l).any(1).sum(0)
    assert (ctx > 0).all(), f"context never reaches cells {(ctx == 0).nonzero().tolist()}"
    for l, t in enumerate(tgt): assert (t > 0).all(), f"level {l} targets never reach cells {(t == 0).nonzero().tolist()}"


@settings(max_examples=30, deadline=None)
@given(kw=configs(), data=st.data())
def test_invalid_configs_name_the_field(kw, data):
    H, W = kw["grid"]
    field, value, message = data.draw(st.sampled_from([
        ("target_scale", (0.0, 0.2), "is outside (0, 1]"),
        ("context_scale", (0.5, 1.5), "is outside (0, 1]"),
        ("target_scale", (0.4, 0.3), "min 0.4 > max 0.3"),
        ("target_aspect", (-1.0, 1.0), "must be > 0"),
        ("context_aspect", (2.0, 1.0), "min 2.0 > max 1.0"),
        ("min_keep", H * W + 1, f"must be in [1, {H * W}]"),
        ("n_levels", _max_levels(H, W) + 1, "does not fit"),
        ("min_context", 0.0, "is outside (0, 1]"),
        ("context", "all", "must be 'ijepa', 'guaranteed' or 'official'"),
    ]))
    if field == "n_levels": kw["n_targets"] = kw["n_targets"][:1]
    with pytest.raises(ConfigError, match=field) as e:
        BlockMasker(**{**kw, field: value})
    assert message in str(e.value)


@settings(max_examples=20, deadline=None)
@given(H=st.integers(2, 12), W=st.integers(2, 12), s=st.floats(0.05, 1.0), a=st.floats(0.2, 5.0))
def test_block_that_cannot_fit_is_rejected(H, W, s, a):
    "A fixed scale and aspect ratio either fits the grid or is rejected with the limit."
    fits = s * H * W * a <= H * H * (1 + 1e-9) and s * H * W / a <= W * W * (1 + 1e-9)
    kw = dict(grid=(H, W), target_scale=(s, s), target_aspect=(a, a), context_aspect=(H / W, H / W))
    if fits:
        BlockMasker(**kw)(2)
    else:
        with pytest.raises(ConfigError, match="cannot fit"):
            BlockMasker(**kw)
