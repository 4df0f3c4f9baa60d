"""The collapse monitor on real runs: a `micro` run made to collapse (`train.target_encoder=shared` without a
regulariser) carries a warning in metrics.jsonl; the preset as shipped, trained as long, carries none (also not
at initialisation). About 20 s on one thread."""
import pytest

from hjepa import runs as R
from hjepa import train as T
from _helpers import micro


def _monitor(out_dir, *overrides):
    cfg = micro(out_dir, "train.epochs=0", "train.max_steps=200", "train.monitor_every=20", "train.val_every=0",
                "data.n_train=256", "data.batch_size=16", *overrides)
    return R.read_metrics(T.train(cfg), "monitor")


def test_monitor_flags_a_collapsing_run_and_not_a_healthy_one(tmp_path):
    healthy = _monitor(tmp_path / "healthy")
    assert healthy[0]["step"] == 1 and all(r["warnings"] == [] for r in healthy), [r["warnings"] for r in healthy]
    shared = _monitor(tmp_path / "shared", "train.target_encoder=shared")
    flagged = [r["step"] for r in shared if r["warnings"]]
    # with train.collapse_patience=4 the first warning comes at the fourth low check in a row, well before the end
    assert flagged and flagged[0] <= 200 - 20, [(r["step"], r["crank/target"], r["spread/target"]) for r in shared]
    assert any("crank/target" in w or "spread/" in w for r in shared for w in r["warnings"])
    for k in ("std/context", "std/target", "rank/context", "rank/target", "rank_frac/target"):  # read by the results page
        assert k in healthy[0], k
