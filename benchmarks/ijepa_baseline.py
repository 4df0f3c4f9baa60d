"""The official I-JEPA train step (facebookresearch/ijepa) as a benchmark baseline.

Nothing of the official code lives in this repository: its modules are imported at run time from a checkout
given by `--ijepa-src` / the environment variable `IJEPA_SRC` (the directory that holds its `src/` package,
e.g. `git -C <mirror> archive HEAD | tar -x -C /tmp/ijepa-src`). When it is absent, `load_ijepa` returns
None and the benchmark skips the baseline with a message.

The step mirrors `src/train.py::main.train_step` of the official code:
schedulers step; target encoder under `no_grad` + `F.layer_norm` + `apply_masks` + `repeat_interleave_batch`;
context encoder on `masks_enc` + predictor; `F.smooth_l1_loss` (+ their `AllReduce`, an identity in one
process); backward; AdamW step (their `init_opt` param groups, through their GradScaler when bf16, as they
do); zero_grad; EMA update of the target encoder with their per-parameter `mul_().add_()` loop.

On a GPU (`device="cuda"`) their own calls apply as written: `torch.autocast("cuda", bfloat16)` (what
`torch.cuda.amp.autocast` is) and the enabled GradScaler that their `init_opt` builds for bf16.
On the CPU, CUDA-only calls are routed around, computation unchanged:
* `torch.cuda.amp.autocast(dtype=bfloat16)` -> `torch.autocast("cpu", dtype=bfloat16)` (the CUDA one is a
  no-op for CPU tensors, so bf16 would silently run in fp32).
* `torch.cuda.amp.GradScaler()` (built by their `init_opt` when bf16): on a machine without CUDA torch
  disables it, so `scale(loss)` is the identity and `step` calls `optimizer.step()`; kept as they use it.
* `gpu_timer` (CUDA events) -> `time.perf_counter` in the harness; `grad_logger` (per-parameter grad norms for
  logging) and DistributedDataParallel (needs a process group) are left out of the timed step.

Run alone: `python benchmarks/ijepa_baseline.py --ijepa-src /tmp/ijepa-src [--steps 10]`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass
class TinyConfig:
    "The issue-10 tiny configuration (identical to `tiny+ijepa` of hjepa.config)."
    image_size: int = 32
    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    pred_dim: int = 96
    pred_depth: int = 3
    batch_size: int = 64
    n_targets: int = 4
    target_scale: tuple = (0.15, 0.2)
    target_aspect: tuple = (0.75, 1.5)
    context_scale: tuple = (0.85, 1.0)
    allow_overlap: bool = False
    min_keep: int = 4  # hjepa's mask.min_keep default; official uses 10 of 196 patches (~5%), 4 of 64 here
    ema: float = 0.996


def tiny_from_hjepa(cfg) -> TinyConfig:
    "The same model and mask configuration as an hjepa `Config` (flat: level 0 only)."
    m, k = cfg.model, cfg.mask
    return TinyConfig(image_size=cfg.data.image_size, patch_size=m.patch_size, embed_dim=m.embed_dim,
                      depth=m.depth, num_heads=m.num_heads, pred_dim=m.pred_dim, pred_depth=m.pred_depth,
                      batch_size=cfg.data.batch_size, n_targets=k.n_targets[0], target_scale=tuple(k.target_scale),
                      target_aspect=tuple(k.target_aspect), context_scale=tuple(k.context_scale),
                      allow_overlap=k.allow_overlap, min_keep=k.min_keep, ema=cfg.optim.ema[0])


def find_src(path: str | None = None) -> Path | None:
    "The official checkout (a directory holding `src/models/vision_transformer.py`), or None."
    for p in (path, os.environ.get("IJEPA_SRC"), "/tmp/ijepa-src"):
        if p and (Path(p) / "src" / "models" / "vision_transformer.py").is_file():
            return Path(p).resolve()
    return None


def load_ijepa(path: str | None = None):
    "Import the official modules from `path`/IJEPA_SRC; returns a namespace of modules or None if absent."
    root = find_src(path)
    if root is None: return None
    if str(root) not in sys.path: sys.path.insert(0, str(root))
    names = dict(vit="src.models.vision_transformer", multiblock="src.masks.multiblock", masks_utils="src.masks.utils",
                 tensors="src.utils.tensors", helper="src.helper", distributed="src.utils.distributed")
    mods = {k: importlib.import_module(v) for k, v in names.items()}
    mod_file = Path(mods["vit"].__file__).resolve()
    if root not in mod_file.parents:
        raise ImportError(f"'src' package resolved to {mod_file}, not inside IJEPA_SRC={root}; another 'src' shadows it")
    return argparse.Namespace(root=root, **mods)


class IJEPABaseline:
    "Official encoder, predictor, MaskCollator, optimizer and train step at a small config (CPU)."

    def __init__(self, ij, cfg: TinyConfig = TinyConfig(), precision: str = "fp32", seed: int = 0, device="cpu"):
        if precision not in ("fp32", "bf16"): raise ValueError(f"precision={precision!r}; allowed: 'fp32', 'bf16'")
        self.ij, self.cfg, self.precision, self.device = ij, cfg, precision, torch.device(device)
        torch.manual_seed(seed)
        vit = ij.vit
        norm = partial(torch.nn.LayerNorm, eps=1e-6)  # as their vit_tiny/vit_predictor factories
        self.encoder = vit.VisionTransformer(img_size=[cfg.image_size], patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                             depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=4, qkv_bias=True,
                                             norm_layer=norm)
        self.predictor = vit.vit_predictor(num_patches=self.encoder.patch_embed.num_patches, embed_dim=cfg.embed_dim,
                                           predictor_embed_dim=cfg.pred_dim, depth=cfg.pred_depth,
                                           num_heads=self.encoder.num_heads)
        self.encoder.to(self.device); self.predictor.to(self.device)  # their main(): .to(device) before init_opt
        self.target_encoder = _deepcopy(self.encoder)
        for p in self.target_encoder.parameters(): p.requires_grad = False
        self.collator = ij.multiblock.MaskCollator(
            input_size=cfg.image_size, patch_size=cfg.patch_size, pred_mask_scale=cfg.target_scale,
            enc_mask_scale=cfg.context_scale, aspect_ratio=cfg.target_aspect, nenc=1, npred=cfg.n_targets,
            allow_overlap=cfg.allow_overlap, min_keep=cfg.min_keep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.cuda.amp.GradScaler deprecation / "CUDA not available" warnings
            self.optimizer, self.scaler, self.scheduler, self.wd_scheduler = ij.helper.init_opt(
                encoder=self.encoder, predictor=self.predictor, wd=0.04, final_wd=0.4, start_lr=2e-4, ref_lr=1e-3,
                final_lr=1e-6, iterations_per_epoch=10_000, warmup=1, num_epochs=10, ipe_scale=1.0,
                use_bfloat16=precision == "bf16")
        self.momentum = cfg.ema

    def make_batch(self, images: torch.Tensor | None = None, labels=None):
        "(images, masks_enc, masks_pred) from their MaskCollator (it also collates the images)."
        B = self.cfg.batch_size
        if images is None: images = torch.randn(B, 3, self.cfg.image_size, self.cfg.image_size)
        if labels is None: labels = torch.zeros(len(images), dtype=torch.long)
        (imgs, _), masks_enc, masks_pred = self.collator(list(zip(images, labels)))
        if self.device.type != "cpu":  # as their train loop: non_blocking copies of images and masks
            imgs = imgs.to(self.device, non_blocking=True)
            masks_enc = [m.to(self.device, non_blocking=True) for m in masks_enc]
            masks_pred = [m.to(self.device, non_blocking=True) for m in masks_pred]
        return imgs, masks_enc, masks_pred

    def _autocast(self):
        # theirs: torch.cuda.amp.autocast(dtype=torch.bfloat16) == torch.autocast("cuda", ...) on the GPU
        if self.precision == "bf16": return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, imgs, masks_enc, masks_pred) -> float:
        "One official train step (see module docstring); returns the loss."
        ij, encoder, predictor, target_encoder = self.ij, self.encoder, self.predictor, self.target_encoder
        self.scheduler.step(); self.wd_scheduler.step()

        def forward_target():
            with torch.no_grad():
                h = target_encoder(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                B = len(h)
                h = ij.masks_utils.apply_masks(h, masks_pred)
                return ij.tensors.repeat_interleave_batch(h, B, repeat=len(masks_enc))

        def forward_context():
            z = encoder(imgs, masks_enc)
            return predictor(z, masks_enc, masks_pred)

        with self._autocast():
            h = forward_target()
            z = forward_context()
            loss = ij.distributed.AllReduce.apply(F.smooth_l1_loss(z, h))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            m = self.momentum
            for param_q, param_k in zip(encoder.parameters(), target_encoder.parameters()):
                param_k.data.mul_(m).add_((1. - m) * param_q.detach().data)
        return float(loss)

    def flops_per_step(self, batch) -> int:
        "FLOPs of one step (forward + backward) by torch's FlopCounterMode."
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc: self.step(*batch)
        return fc.get_total_flops()


def _deepcopy(m):
    import copy
    return copy.deepcopy(m)


def time_steps(bl: IJEPABaseline, n_steps: int = 10, warmup: int = 3, n_batches: int = 4) -> dict:
    "Median step time (s) and images/s over `n_steps` after `warmup`, cycling through pre-made batches."
    batches = [bl.make_batch() for _ in range(n_batches)]
    for i in range(warmup): bl.step(*batches[i % n_batches])
    ts = []
    for i in range(n_steps):
        t0 = time.perf_counter(); bl.step(*batches[i % n_batches]); ts.append(time.perf_counter() - t0)
    med = statistics.median(ts)
    return dict(step_s=med, images_per_s=bl.cfg.batch_size / med, times=ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ijepa-src", default=None, help="official checkout (holds src/); default $IJEPA_SRC")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ij = load_ijepa(a.ijepa_src)
    if ij is None:
        print("official I-JEPA code not found (set --ijepa-src or IJEPA_SRC to a checkout holding src/): baseline skipped")
        return 0
    bls = {p: IJEPABaseline(ij, precision=p) for p in ("fp32", "bf16")}
    batches = {p: [b.make_batch() for _ in range(4)] for p, b in bls.items()}
    for p, b in bls.items():
        for i in range(a.warmup): b.step(*batches[p][i % 4])
    ts = {p: [] for p in bls}
    for i in range(a.steps):  # interleaved fp32, bf16, fp32, ...
        for p, b in bls.items():
            t0 = time.perf_counter(); b.step(*batches[p][i % 4]); ts[p].append(time.perf_counter() - t0)
    B = bls["fp32"].cfg.batch_size
    for p in bls:
        med = statistics.median(ts[p])
        print(f"official {p}: {med*1e3:.1f} ms/step  {B/med:.1f} images/s  (median of {a.steps}, batch {B})")
    print(f"bf16/fp32 speed-up: {statistics.median(ts['fp32'])/statistics.median(ts['bf16']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
