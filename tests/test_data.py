"""hjepa.data beyond the notebook's examples: determinism, splits, bad inputs, transforms, loaders."""
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from hjepa.config import ConfigError, get_config
from hjepa.data import (CIFAR, SPLITS, DigitsDataset, EpochBatchSampler, ShapesDataset, build_dataset, build_loader,
                        cifar_splits, eval_transform, image_folder_splits, load_cifar, train_transform)
from hjepa.masks import build_masker

torch.set_num_threads(1)


def micro(*o):
    return get_config("micro+ijepa", ["data.n_train=24", "data.n_val=8", "data.n_test=8", "data.batch_size=4", *o])


def disk(*o):
    return get_config("ijepa", ["data.image_size=16", "model.patch_size=4", "data.batch_size=4", *o])


def write_pngs(root, classes=("a", "b"), n=4, size=20):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rgb = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / c / f"{i}.png")
    return root


def write_cifar(root, name="cifar10", n=6, byte_keys=True):
    spec = CIFAR[name]
    d = root / spec["dir"]
    d.mkdir(parents=True)
    key = (lambda s: s.encode()) if byte_keys else (lambda s: s)
    rng = np.random.default_rng(1)
    for fn in spec["train"] + spec["test"]:
        with open(d / fn, "wb") as f:
            pickle.dump({key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         key(spec["labels"]): rng.integers(0, spec["n_classes"], n).tolist()}, f, protocol=2)
    return d


# ---- embedded datasets -------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), i=st.integers(0, 10**6), size=st.sampled_from([8, 16, 24]))
def test_shapes_deterministic(seed, i, size):
    a = ShapesDataset(10**6 + 1, size, seed=seed)[i][0]
    b = ShapesDataset(10**6 + 1, size, seed=seed)[i][0]
    assert torch.equal(a, b) and a.shape == (3, size, size) and a.dtype == torch.uint8
    assert not torch.equal(a, ShapesDataset(10**6 + 1, size, seed=seed + 1)[i][0])


def test_shapes_splits_differ_and_labels_balanced():
    tr, te = ShapesDataset(20, 16, n_classes=5), ShapesDataset(20, 16, n_classes=5, split="test")
    assert all(not torch.equal(tr[i][0], te[i][0]) for i in range(20))
    assert np.bincount([tr[i][1] for i in range(20)]).tolist() == [4] * 5


def test_digits_split_is_a_partition():
    parts = [DigitsDataset(s, 8, n_val=50, n_test=100, seed=3).index for s in SPLITS]
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx)) == 1797
    assert not np.array_equal(DigitsDataset("val", 8, n_val=50, n_test=100, seed=4).index, parts[1])


# ---- ImageFolder --------------------------------------------------------------------------------------
def test_imagefolder_train_val_test_dirs(tmp_path):
    for s in SPLITS: write_pngs(tmp_path / s, n=3 if s == "train" else 2)
    sp = image_folder_splits(tmp_path)
    assert [len(sp[s]) for s in SPLITS] == [6, 4, 4]
    assert sp["test"] is not sp["val"]
    assert all(p.parent.name == sp["test"].classes[y] for p, y in zip(sp["test"].paths, sp["test"].labels))


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(disk("data.dataset=imagefolder", f"data.data_dir={tmp_path / 'x'}"), "train")
    write_pngs(tmp_path / "t" / "train")
    write_pngs(tmp_path / "t" / "val", classes=("a", "zebra"), n=1)
    with pytest.raises(ValueError, match=r"has classes \['zebra'\]"):
        image_folder_splits(tmp_path / "t")
    write_pngs(tmp_path / "small", size=10)
    with pytest.raises(ValueError, match=r"10x10 px, smaller than the 16-px crop"):
        build_dataset(disk("data.dataset=imagefolder", f"data.data_dir={tmp_path / 'small'}", "data.n_val=2"), "train")
    (tmp_path / "list.txt").write_text("a\na\n")
    with pytest.raises(ValueError, match=r"repeats \['a'\]"):
        image_folder_splits(tmp_path / "small", tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no classes"):
        image_folder_splits(tmp_path / "small", tmp_path / "list.txt")


def test_imagefolder_bad_fraction_boundary(tmp_path):
    root = write_pngs(tmp_path / "r", n=5)  # 10 good files
    (root / "a" / "bad.png").write_bytes(b"\x89PNG nonsense")  # 1 of 11 bad: 9.1%
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert len(image_folder_splits(root, max_bad_fraction=0.1)["train"]) == 10
    assert any("bad.png" in str(m.message) for m in w)
    with pytest.raises(ValueError, match="bad.png"):
        image_folder_splits(root, max_bad_fraction=0.09)


# ---- CIFAR --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,byte_keys", [("cifar10", True), ("cifar10", False), ("cifar100", True)])
def test_cifar_roundtrip(tmp_path, name, byte_keys):
    d = write_cifar(tmp_path, name, byte_keys=byte_keys)
    x, y, names = load_cifar(tmp_path, name, "test")
    with open(d / CIFAR[name]["test"][0], "rb") as f: raw = pickle.load(f, encoding="bytes")
    k = (lambda s: s.encode()) if byte_keys else (lambda s: s)
    assert torch.equal(x.flatten(1), torch.from_numpy(raw[k("data")]))
    assert y.tolist() == raw[k(CIFAR[name]["labels"])]
    assert len(names) == CIFAR[name]["n_classes"]  # no meta file: numbered names
    sp = cifar_splits(d, name, n_val=2, seed=0)
    assert len(sp["train"]) + len(sp["val"]) == 6 * len(CIFAR[name]["train"])


def test_cifar_bad_inputs(tmp_path):
    d = write_cifar(tmp_path)
    (d / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5 does not exist"):
        build_dataset(disk("data.dataset=cifar10", f"data.data_dir={tmp_path}", "data.n_val=2"), "train")
    with open(d / "data_batch_5", "wb") as f: pickle.dump([1, 2, 3], f)
    with pytest.raises(ValueError, match="data_batch_5 holds a list"):
        load_cifar(d)
    with open(d / "data_batch_5", "wb") as f: pickle.dump({"data": np.zeros((2, 3072), np.float32), "labels": [0, 0]}, f)
    with pytest.raises(ValueError, match="data is float32"):
        load_cifar(d)


# ---- transforms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("o", [[], ["data.hflip=true"], ["data.augment=3aug"],
                               ["data.augment=3aug", "data.n_local_crops=2", "data.local_crop_size=8", "loss.regularizers=[cjepa]"]])
def test_transforms_shapes_and_dtypes(o):
    cfg = micro(*o)
    img = ShapesDataset(1, 40)[0][0]
    out = train_transform(cfg)(img)
    views = out if isinstance(out, list) else [out]
    assert len(views) == 1 + cfg.data.n_local_crops
    assert views[0].shape == (3, 16, 16) and all(v.shape == (3, 8, 8) for v in views[1:])
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert eval_transform(cfg)(img).shape == (3, 16, 16)


def test_eval_crop_fraction_crops_the_border():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[:, :2] = 255  # a bright top border
    keep = eval_transform(micro())(img)
    crop = eval_transform(micro("data.eval_crop_fraction=0.75"))(img)
    assert keep[:, 0].mean() > crop[:, 0].mean()


def test_3aug_excludes_hflip():
    with pytest.raises(ConfigError, match="data.hflip=True has no effect"):
        micro("data.augment=3aug", "data.hflip=true")


# ---- samplers and loaders -----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), bs=st.integers(1, 8), world=st.integers(1, 4), epoch=st.integers(0, 5), drop=st.booleans())
def test_sampler_resume_and_sharding(n, bs, world, epoch, drop):
    if drop and n // world < bs: return
    shards = [list(EpochBatchSampler(n, bs, True, 7, epoch, 0, drop, r, world)) for r in range(world)]
    for r, full in enumerate(shards):
        assert all(len(b) == bs for b in full) if drop else all(len(b) == bs for b in full[:-1])
        for k in range(len(full) + 1):
            assert list(EpochBatchSampler(n, bs, True, 7, epoch, k, drop, r, world)) == full[k:]
    flat = [i for s in shards for b in s for i in b]
    if not drop: assert set(flat) == set(range(n))
    else: assert len(flat) == len(set(flat))


def _flat(loader):
    out = []
    for b in loader:
        views = b[0] if isinstance(b[0], list) else [b[0]]
        out.append([*views, b[1]] + ([b[2].context, *b[2].targets] if len(b) == 3 else []))
    return out


def _equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x, y))


def test_loader_workers_and_resume_3aug_multicrop():
    o = ["data.augment=3aug", "data.n_local_crops=1", "data.local_crop_size=8", "loss.regularizers=[cjepa]"]
    cfg, cfg2 = micro(*o), micro(*o, "data.num_workers=2")
    m = build_masker(cfg)
    full = _flat(build_loader(cfg, "train", m, epoch=1))
    assert len(full) == 6 and full[0][0].shape == (4, 3, 16, 16) and full[0][1].shape == (4, 3, 8, 8)
    _equal(full, _flat(build_loader(cfg2, "train", m, epoch=1)))
    _equal(full[4:], _flat(build_loader(cfg2, "train", m, epoch=1, start_batch=4)))
    for c in (cfg, cfg2):  # a loader iterated twice repeats its epoch exactly
        loader = build_loader(c, "train", m, epoch=1, start_batch=2)
        _equal(_flat(loader), _flat(loader))


def test_eval_loader_order_and_batch_size():
    cfg = micro("data.dataset=digits", "data.n_train=30")
    ev = list(build_loader(cfg, "test", batch_size=5))
    assert [len(b[1]) for b in ev] == [5, 3]
    ds = build_dataset(cfg, "test")
    assert torch.equal(torch.cat([b[1] for b in ev]), torch.as_tensor(ds.targets))
    assert len(next(iter(build_loader(cfg, "val")))[1]) == min(cfg.eval.batch_size, len(ds))


# ---- damaged and unusual image files (issue 33) --------------------------------------------------------
def truncate(p, keep=0.5):
    "Cut an image file: its header still opens (PIL reads the size), its pixels do not decode."
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])


def test_truncated_png_is_found_at_scan_time_and_skipped(tmp_path):
    root = write_pngs(tmp_path / "r", n=10, size=64)
    truncate(root / "a" / "3.png")
    with Image.open(root / "a" / "3.png") as im: assert im.size == (64, 64)   # a header-only check would pass it
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sp = image_folder_splits(root, n_val=4, max_bad_fraction=0.2)
    assert any("3.png (unreadable" in str(m.message) and "1 of 20" in str(m.message) for m in w)
    # one rule: the file is counted once, against the folder scanned, and never reached by a split
    assert len(sp["train"]) + len(sp["val"]) == 19
    for s in ("train", "val"):
        assert all(sp[s][k][0].shape == (3, 64, 64) for k in range(len(sp[s]))) and not sp[s].bad


def test_image_verdicts_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    import hjepa.data as D
    monkeypatch.setenv("HJEPA_CACHE_DIR", str(tmp_path / "cache"))
    root = write_pngs(tmp_path / "r", n=2)
    assert D.check_images(sorted(root.rglob("*.png"))).all()
    calls = []
    monkeypatch.setattr(D, "decode_image", lambda p: calls.append(p) or torch.zeros(3, 20, 20))
    assert D.check_images(sorted(root.rglob("*.png"))).all() and calls == []   # nothing decoded again
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "a" / "0.png")  # changed: verified again
    D.check_images(sorted(root.rglob("*.png")))
    assert calls == [root / "a" / "0.png"]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    from hjepa.data import decode_image
    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im: assert im.mode.startswith("I")
    x = decode_image(tmp_path / "g16.png")
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8
    assert torch.equal(x[0], torch.from_numpy(np.round(a / 257.0).astype(np.uint8)))
    assert abs(x.float().mean().item() - 127.5) < 1


def test_data_problems_are_data_errors(tmp_path):
    from hjepa.data import DataError
    root = write_pngs(tmp_path / "r", n=3)
    with pytest.raises(DataError, match=r"data.batch_size=64 is larger than the 4 images of the split"):
        build_loader(disk("data.dataset=imagefolder", f"data.data_dir={root}", "data.n_val=2", "data.batch_size=64"), "train",
                     masker=build_masker(disk()))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; give the directory"):
        build_dataset(disk("data.dataset=imagefolder", f"data.data_dir={tmp_path / 'f.txt'}"), "train")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class directory .*empty contains no images"):
        image_folder_splits(root)
