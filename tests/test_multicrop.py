"""Multi-crop (`data.n_local_crops` > 0) trains: the local crops reach the C-JEPA term, a step with them changes the
weights, and a short `micro` run with them trains without error while its loss falls."""
import torch

from hjepa import runs as R
from hjepa import train as T
from hjepa.config import get_config
from hjepa.losses import build_loss
from _helpers import micro

CROPS = ["loss.regularizers=[cjepa]", "data.n_local_crops=2", "data.local_crop_size=8", "data.local_crop_scale=[0.1, 0.4]"]


def test_multicrop_step_uses_the_crops_and_changes_weights(tmp_path):
    tr = T.Trainer(micro(tmp_path / "r", *CROPS)).setup()
    images, labels, masks = next(iter(tr.loader_fn(tr.cfg, "train")))
    assert isinstance(images, list) and [tuple(x.shape[-2:]) for x in images] == [(16, 16), (8, 8), (8, 8)]
    loss_fn = build_loss(tr.cfg)
    with torch.no_grad():
        a = loss_fn(tr.model(images, masks))["cjepa/inv"]
        b = loss_fn(tr.model([images[0], images[1], images[2].flip(-1)], masks))["cjepa/inv"]
    assert a != b  # the crops are views of the C-JEPA term
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    info = tr.optimizer_step([(images, labels, masks)], 0)
    assert not info.get("skipped") and "cjepa/inv" in info
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("context_encoder.") for k in changed) and any(k.startswith("predictor.") for k in changed)


def test_multicrop_run_trains_and_loss_falls(tmp_path):
    cfg = micro(tmp_path / "r", *CROPS, "train.epochs=0", "train.max_steps=64", "train.log_every=4", "train.val_every=0",
                "data.n_train=256", "data.batch_size=16")
    losses = [r["loss"] for r in R.read_metrics(T.train(cfg), "train")]
    assert len(losses) == 16 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) < 0.95 * sum(losses[:4]), losses


LEJEPA = ["mask.n_targets=[4]", "mask.nested=false", "data.local_crop_size=8", "data.n_local_crops=2",
          "model.projector=[64, 64, 32]", "loss.sigreg_slices=64"]


def lejepa_micro(path, *extra):
    "The micro test config (`_helpers.micro`) with LeJEPA's recipe: its views, projector and loss."
    return get_config("micro+lejepa", LEJEPA + [f"train.out_dir={path}", "train.progress=false", "train.threads=1",
                                                "data.n_train=64", "data.n_val=16", "data.batch_size=8", *extra])


def test_lejepa_step_uses_every_view_and_changes_weights(tmp_path):
    tr = T.Trainer(lejepa_micro(tmp_path / "r")).setup()
    assert tr.model.predictor is None and tr.model.target_encoder is None  # no predictor, no EMA copy
    images, labels, masks = next(iter(tr.loader_fn(tr.cfg, "train")))
    assert [tuple(x.shape[-2:]) for x in images] == [(16, 16)] * 2 + [(8, 8)] * 2
    loss_fn = build_loss(tr.cfg)
    tr.model.eval()  # BatchNorm on running statistics: a view changes only its own projection
    with torch.no_grad():
        a = loss_fn(tr.model(images, masks))["lejepa/inv"]
        b = loss_fn(tr.model(images[:3] + [images[3].flip(-1)], masks))["lejepa/inv"]
    assert a != b  # the local views are in the loss
    tr.model.train()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    info = tr.optimizer_step([(images, labels, masks)], 0)
    assert not info.get("skipped") and {"lejepa/inv", "sigreg"} <= set(info) and "momentum" not in info
    changed = {k.split(".")[0] for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])}
    assert {"context_encoder", "projector"} <= changed


def test_lejepa_run_trains_and_loss_falls(tmp_path):
    cfg = lejepa_micro(tmp_path / "r", "train.epochs=0", "train.max_steps=64", "train.log_every=4", "train.val_every=0",
                       "data.n_train=256", "data.batch_size=16")
    losses = [r["loss"] for r in R.read_metrics(T.train(cfg), "train")]
    assert len(losses) == 16 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) < 0.95 * sum(losses[:4]), losses
