"""hjepa.masks beyond the notebook's examples: spatial symmetry of every level, counted overlaps."""
import pytest
import torch

from hjepa.masks import BlockMasker, _upsample, mask_stats

torch.set_num_threads(1)


def edge_ratios(masker, n=4096, batch_size=256):
    "Per level: (last / first row, last / first column) of how often a cell is a target of that level."
    g, freq = torch.Generator().manual_seed(0), [0] * masker.n_levels
    for _ in range(n // batch_size):
        m = masker(batch_size, generator=g)
        freq = [f + m.target_mask(l).any(1).float().sum(0) for l, f in enumerate(freq)]
    return [((f[-1].mean() / f[0].mean()).item(), (f[:, -1].mean() / f[:, 0].mean()).item()) for f in freq]


@pytest.mark.parametrize("nested", [False, True])
def test_first_and_last_rows_and_columns_equally_covered(nested):
    "Placement is mirror-symmetric on every level: nested coarse blocks break .5 ties at random, not upwards."
    masker = BlockMasker(16, n_levels=3, n_targets=[4, 2, 1], nested=nested, seed=0)
    for level, (rows, cols) in enumerate(edge_ratios(masker)):
        assert 0.88 < rows < 1.12 and 0.88 < cols < 1.12, f"level {level}: last/first row {rows:.2f}, column {cols:.2f}"


def test_nested_ties_are_reproducible():
    "The tie-breaking coin comes from the masker's generator: same seed, same masks."
    a, b = (BlockMasker(16, n_levels=3, n_targets=[4, 2, 1], nested=True, seed=7) for _ in range(2))
    ma, mb = a(32), b(32)
    assert all(torch.equal(x, y) for x, y in zip(ma.targets, mb.targets)) and torch.equal(ma.context, mb.context)


def test_context_never_holds_a_cut_target_uncounted():
    """Nested, `context_cut='all_levels'`, blocks so big that they shrink and short samples are redrawn: every
    sample whose context holds a target cell of any level is counted in `stats['overlapped']`."""
    masker = BlockMasker(4, n_levels=2, n_targets=[2, 1], target_scale=(0.3, 0.4), nested=True,
                         context="guaranteed", min_context=0.6, seed=0)
    uncounted = 0
    for _ in range(20):
        before = masker.stats["overlapped"]
        m = masker(32)
        union = sum(_upsample(m.target_mask(l).any(1), 2 ** l).int() for l in range(m.n_levels)) > 0
        held = (m.context_mask() & union).flatten(1).any(1).sum().item()
        uncounted += max(0, held - (masker.stats["overlapped"] - before))
    assert masker.stats["shrunk"] > 0, "the case must exercise shrinking"
    assert uncounted == 0, f"{uncounted} samples hold target cells in their context without being counted"


# The official I-JEPA MaskCollator (facebookresearch/ijepa, src/masks/multiblock.py), run with its own code on a
# 32-px image in 4-px patches (8x8 grid; 4 targets of scale 0.15-0.2 and aspect 0.75-1.5, context 0.85-1.0,
# min_keep 4, no overlap), 4096 samples per seed, 5 seeds: mean context fraction after its truncation to the batch
# minimum, by batch size.
OFFICIAL_8X8_CONTEXT = {64: 0.198, 128: 0.185}


@pytest.mark.parametrize("batch_size", sorted(OFFICIAL_8X8_CONTEXT))
def test_official_context_matches_the_official_sampler(batch_size):
    kept = [mask_stats(BlockMasker(8, context="official"), n=4096, batch_size=batch_size, seed=s)["coverage"].loc["context", "mean"]
            for s in range(3)]
    assert abs(sum(kept) / 3 - OFFICIAL_8X8_CONTEXT[batch_size]) < 0.015, kept


def test_official_blocks_follow_the_exclusive_bound():
    "Corners from randint(0, H - h): every block ends before the last row/column, and reaches the row before it."
    masker = BlockMasker(16, n_levels=2, n_targets=[4, 2], context="official", seed=0)
    m, d = masker._sample(512)
    for l, (corners, (h, w)) in enumerate(zip(d.corners, d.sizes)):
        H, W = masker.level_grids[l]
        assert corners[..., 0].max() == H - h - 1 and corners[..., 1].max() == W - w - 1, (l, (h, w))
        assert corners.min() == 0
    (h, w), (H, W) = d.csize, masker.grid
    assert h < H and w < W and (d.ccorner[..., 0] <= H - h - 1).all() and (d.ccorner[..., 1] <= W - w - 1).all()


def test_official_equalisation_keeps_the_first_indices():
    masker = BlockMasker(8, context="official", seed=0)
    m, d = masker._sample(64)
    n = m.context.shape[1]
    for b in range(64): assert m.context[b].tolist() == d.context[b].flatten().nonzero()[:n, 0].tolist()
