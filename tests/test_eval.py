"""Tests of hjepa.eval beyond the notebook: known-structure features, determinism, cache keys, errors, CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hjepa.config import ConfigError, EvalConfig, get_config
import hjepa.eval as E

ROOT = Path(__file__).resolve().parents[1]


def splits(n=450, n_classes=5, seed=0, spread=0.3, shuffle_labels=False):
    X, y = E.gaussian_clusters(n, n_classes, dim=16, spread=spread, seed=seed)
    if shuffle_labels: y = np.random.default_rng(seed + 100).permutation(y)
    a, b = n // 3, 2 * n // 3
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


# --- kNN ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_knn_separable_clusters_are_perfect(seed):
    (Xa, ya), _, (Xt, yt) = splits(seed=seed)
    r = E.knn_classify(Xa, ya, Xt, yt, k=20, temperature=0.07)
    assert r["top1"] == 1.0 and r["top5"] == 1.0


def test_knn_random_labels_near_chance():
    accs = [E.knn_classify(*splits(600, 4, seed=s, shuffle_labels=True)[0], *splits(600, 4, seed=s, shuffle_labels=True)[2])["top1"]
            for s in range(5)]
    assert abs(np.mean(accs) - 0.25) < 0.07, accs


def test_knn_top5_at_least_top1_and_torch_inputs():
    (Xa, ya), _, (Xt, yt) = splits(n=300, n_classes=10, spread=2.5)
    r = E.knn_classify(torch.from_numpy(Xa), torch.from_numpy(ya), Xt, yt, k=7)
    assert 0 < r["top1"] < 1 and r["top5"] >= r["top1"]


@pytest.mark.parametrize("center", [True, False])
def test_knn_matches_bruteforce_vote(center):
    rng = np.random.default_rng(0)
    Xa, ya = rng.normal(size=(50, 6)).astype(np.float32) + 3.0, rng.integers(0, 3, 50)  # a common offset
    Xt, yt = rng.normal(size=(20, 6)).astype(np.float32) + 3.0, rng.integers(0, 3, 20)
    r = E.knn_classify(Xa, ya, Xt, yt, k=5, temperature=0.5, chunk=3, center=center)
    mu = Xa.mean(0) if center else 0.0
    A, T = Xa - mu, Xt - mu
    A = A / np.linalg.norm(A, axis=1, keepdims=True); T = T / np.linalg.norm(T, axis=1, keepdims=True)
    S = T @ A.T
    want = []
    for s in S:
        nn = np.argsort(-s)[:5]
        votes = np.bincount(ya[nn], weights=np.exp(s[nn] / 0.5), minlength=3)
        want.append(votes.argmax())
    np.testing.assert_array_equal(r["pred"], want)


def test_knn_extreme_temperature_stays_finite():
    (Xa, ya), _, (Xt, yt) = splits()
    assert E.knn_classify(Xa, ya, Xt, yt, temperature=1e-4)["top1"] == 1.0


# --- linear probe ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,grid", [("sklearn", [0.1, 1.0]), ("torch", [0.01, 0.1])])
def test_probe_separable_and_random(kind, grid):
    p = E.linear_probe(*splits(), grid=grid, kind=kind, steps=100)
    assert p["test"] == 1.0 and p["train"] == 1.0 and p["param"] in grid
    q = E.linear_probe(*splits(600, 4, shuffle_labels=True), grid=grid, kind=kind, steps=100)
    assert abs(q["test"] - 0.25) < 0.12, q["test"]


@pytest.mark.parametrize("kind", ["sklearn", "torch"])
def test_probe_deterministic(kind):
    s = splits(spread=1.5)
    a = E.linear_probe(*s, grid=[0.01, 0.1], kind=kind, seed=3, steps=50)
    b = E.linear_probe(*s, grid=[0.01, 0.1], kind=kind, seed=3, steps=50)
    np.testing.assert_array_equal(a["pred"], b["pred"])
    assert a["val_scores"] == b["val_scores"]


def test_probe_is_scale_invariant():  # standardisation: multiplying features by 1000 changes nothing
    s = splits(spread=1.5)
    big = [(X * 1000, y) for X, y in s]
    np.testing.assert_array_equal(E.linear_probe(*s, grid=[1.0])["pred"], E.linear_probe(*big, grid=[1.0])["pred"])


def test_evaluate_features_deterministic_and_complete():
    a = E.evaluate_features(*splits(spread=1.2), EvalConfig(knn_k=5, probe_grid=[0.1, 1.0]))
    b = E.evaluate_features(*splits(spread=1.2), EvalConfig(knn_k=5, probe_grid=[0.1, 1.0]))
    for k in ("knn_top1", "knn_top5", "probe_train", "probe_val", "probe_test"):
        assert a[k] == b[k] and 0 <= a[k] <= 1
    np.testing.assert_array_equal(a["confusion"], b["confusion"])
    assert a["confusion"].shape == (5, 5) and a["confusion"].sum() == a["n_test"] == 150
    np.testing.assert_allclose(np.nanmean(a["per_class_accuracy"] * a["confusion"].sum(1)) * 5 / 150, a["probe_test"])


# --- errors ------------------------------------------------------------------------------------
def test_errors_one_class_and_empty():
    (Xa, ya), va, te = splits()
    with pytest.raises(ValueError, match="only one class"):
        E.knn_classify(Xa, np.zeros_like(ya), *te)
    with pytest.raises(ValueError, match="only one class"):
        E.linear_probe((Xa, np.full_like(ya, 4)), va, te)
    with pytest.raises(ValueError, match="split 'test' is empty"):
        E.evaluate_features((Xa, ya), va, (Xa[:0], ya[:0]))
    with pytest.raises(ValueError, match="split 'val' is empty"):
        E.extract_features(E.PixelEncoder(), [], split="val")
    with pytest.raises(ValueError, match="kind='svm'"):
        E.linear_probe((Xa, ya), va, te, kind="svm")


def test_architecture_mismatch_lists_differences():
    a = get_config("micro+ijepa")
    b = get_config("micro+ijepa", ["model.depth=3", "model.patch_size=2", "train.target_encoder=shared"])
    with pytest.raises(ConfigError) as e:
        E.check_architecture(a, b)
    msg = str(e.value)
    for s in ("model.depth: 2 -> 3", "model.patch_size: 4 -> 2", "train.target_encoder: 'ema' -> 'shared'"):
        assert s in msg
    E.check_architecture(a, get_config("micro+ijepa", ["model.grad_checkpointing=true", "eval.knn_k=3"]))


def test_config_fields():
    assert get_config("micro", ["eval.probe=torch", "eval.probe_steps=50"]).eval.probe_steps == 50
    with pytest.raises(ConfigError, match="eval.probe_steps=50 has no effect"):
        get_config("micro", ["eval.probe_steps=50"])


# --- features and cache ------------------------------------------------------------------------
def test_cache_key_tracks_checkpoint_and_data(tmp_path):
    ck = tmp_path / "final.pt"; ck.write_bytes(b"abc")
    cfg = get_config("micro")
    k = E.feature_cache_key(cfg, "train", ck)
    assert k == E.feature_cache_key(get_config("micro", ["data.batch_size=3"]), "train", ck)   # loader-only setting
    assert k != E.feature_cache_key(cfg, "test", ck)
    assert k != E.feature_cache_key(get_config("micro", ["data.seed=1"]), "train", ck)
    assert k != E.feature_cache_key(cfg, "train", ck, encoder="context")
    ck.write_bytes(b"abcd")                                                                    # rewritten checkpoint
    assert k != E.feature_cache_key(cfg, "train", ck)


class Linear(torch.nn.Module):
    "Stand-in encoder: a fixed random projection of the pixels (so features keep the class structure)."
    def __init__(self, seed=0):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 24)
        with torch.no_grad(): self.proj.weight.copy_(torch.randn(24, 192, generator=torch.Generator().manual_seed(seed)))

    def encode(self, images, pool="mean", encoder="target", last_n_blocks=1):
        return self.proj(images.flatten(1))


def toy_loaders(n=(60, 30, 30), n_classes=3):
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(n_classes, 3, 8, 8, generator=g)
    out = {}
    for s, m in zip(("train", "val", "test"), n):
        y = torch.arange(m) % n_classes
        out[s] = DataLoader(TensorDataset(protos[y] + 0.3 * torch.randn(m, 3, 8, 8, generator=g), y), batch_size=16)
    return out


def test_evaluate_live_model_with_baselines(monkeypatch, tmp_path):
    monkeypatch.setattr(E, "_random_init", lambda cfg: Linear(seed=cfg.train.seed + 1))
    cfg = get_config("micro", ["eval.knn_k=5", "eval.probe_grid=[1.0]"])
    r = E.evaluate(Linear(), cfg, loaders=toy_loaders(), device="cpu", cache_dir=tmp_path)
    for d in (r, r["random_init"], r["pixels"]):
        assert d["knn_top1"] == 1.0 and d["probe_test"] == 1.0 and d["n_test"] == 30
    assert r["feature_dim"] == 24 and r["pixels"]["feature_dim"] == 192
    assert r["projection"]["xy"].shape == (30, 2)
    # baselines are cached (keyed by tag); a live model is not (it has no checkpoint to key by)
    names = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.npz"))
    assert names == ["pixels"] * 3 + ["random_init"] * 3
    out = E.save_eval(r, tmp_path / "eval.json")
    js = json.loads(out.read_text())
    assert js["random_init"]["probe_test"] == 1.0 and len(js["confusion"]) == 3


def test_evaluate_errors(monkeypatch):
    cfg = get_config("micro")
    with pytest.raises(ValueError, match="cfg is required"):
        E.evaluate(Linear(), None, loaders=toy_loaders())
    ld = toy_loaders()
    ld["val"] = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="split 'val' is empty"):
        E.evaluate(Linear(), cfg, loaders=ld, baselines=False, device="cpu")
    ld = toy_loaders(n_classes=1)
    with pytest.raises(ValueError, match="only one class"):
        E.evaluate(Linear(), cfg, loaders=ld, baselines=False, device="cpu")


# --- checkpoints (need hjepa.train and hjepa.models) -------------------------------------------
def _write_checkpoint(path, cfg):
    "An untrained checkpoint in the DESIGN.md format, its weights those the trainer would start from."
    from hjepa.models import HJEPA
    from hjepa.runs import write_checkpoint
    torch.manual_seed(cfg.train.seed)
    return write_checkpoint(path, {"config": cfg.to_dict(), "model": HJEPA(cfg).state_dict(), "step": 0, "epoch": 0})


def test_checkpoint_architecture_mismatch(tmp_path):
    pytest.importorskip("hjepa.models")
    ck = _write_checkpoint(tmp_path / "final.pt", get_config("micro+ijepa"))
    with pytest.raises(ConfigError, match=r"different architecture(.|\n)*model.depth: 2 -> 3"):
        E.evaluate(ck, get_config("micro+ijepa", ["model.depth=3"]), baselines=False)


def test_checkpoint_evaluate_and_cache(tmp_path):
    pytest.importorskip("hjepa.models")
    (tmp_path / "checkpoints").mkdir()
    ck = _write_checkpoint(tmp_path / "checkpoints" / "final.pt", get_config("micro+ijepa"))
    ov = ["data.n_train=48", "data.n_val=24", "data.n_test=24", "eval.knn_k=5", "eval.probe_grid=[1.0]"]
    a = E.evaluate(ck, overrides=ov, device="cpu")
    assert {"knn_top1", "knn_top5", "probe_train", "probe_val", "probe_test", "random_init", "pixels"} <= set(a)
    assert a["n_test"] == 24 and a["checkpoint"] == str(ck)
    cached = sorted((tmp_path / "eval_cache").glob("*.npz"))
    assert len(cached) == 9                                                   # 3 feature sets x 3 splits
    b = E.evaluate(ck, overrides=ov, device="cpu")
    assert a["knn_top1"] == b["knn_top1"] and a["probe_test"] == b["probe_test"]
    # the same weights under the same seed: the untrained checkpoint equals the random-init baseline
    assert a["knn_top1"] == a["random_init"]["knn_top1"]


# --- CLI ---------------------------------------------------------------------------------------
def test_cli_corrupt_checkpoint_and_bad_override(tmp_path, capsys):
    bad = tmp_path / "final.pt"; bad.write_bytes(b"not a checkpoint")
    assert E.main(["--checkpoint", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hjepa-eval: error: checkpoint {bad} is truncated or corrupt")


def test_cli_missing_checkpoint(capsys):
    assert E.main(["--checkpoint", "/does/not/exist.pt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hjepa-eval: error: checkpoint /does/not/exist.pt does not exist"]


def test_python_m_runs_main(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "hjepa.eval", "--checkpoint", str(tmp_path / "x.pt")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert p.returncode == 1 and "hjepa-eval: error: checkpoint" in p.stderr and "Traceback" not in p.stderr
