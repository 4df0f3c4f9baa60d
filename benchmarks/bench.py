"""hjepa train-step benchmark suite (issue 10): one command, a JSON file and a table of targets.

    python benchmarks/bench.py --out benchmarks/results.json            # full (a few minutes on 2 cores)
    python benchmarks/bench.py --quick --out /tmp/bench_quick.json      # smoke run (~1-2 min)
    python benchmarks/bench.py --ijepa-src /tmp/ijepa-src ...           # with the official baseline

The official I-JEPA baseline (benchmarks/ijepa_baseline.py) is imported from `--ijepa-src` / `$IJEPA_SRC`
and skipped with a message when absent. The machine is shared and noisy, so every comparison is a RATIO of
medians measured in this one process with the variants interleaved (A B C A B C ...). Peak RSS is measured
per variant in a fresh subprocess (ru_maxrss is per process), and torch.compile in a subprocess with a
time limit. No timed assertions anywhere: the targets are reported as met / not met.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path: sys.path.insert(0, p)

import torch
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

warnings.filterwarnings("ignore", message=".*requires_grad=True.*")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, message=".*GradScaler.*")

aten = torch.ops.aten

# FlopCounterMode counts CUDA SDPA kernels but not the CPU flash kernel; count it with torch's own formulas.
try:
    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _sdpa_cpu_flop(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return _fc.sdpa_flop_count(q, k, v)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _sdpa_cpu_bwd_flop(go, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return _fc.sdpa_backward_flop_count(go, q, k, v)
except Exception:  # already registered by a newer torch
    pass

# ----------------------------------------------------------------------------------------------------------
# Variants: a thing with .step(i), .batch_size, .flops(i), .info; batches are made in advance (they come
# from DataLoader workers in training, so they are not part of the step).
# ----------------------------------------------------------------------------------------------------------
N_BATCHES = 4


def write_json(results: dict, path) -> Path:
    "Write the results JSON atomically (a temporary file renamed over `path`) and say where."
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out)
    print(f"\nwrote {out}")
    return out

def _median(xs): return statistics.median(xs) if xs else float("nan")


class _StepFlops:
    "FLOPs of a variant's step on mask batch `i`, counted once per batch with FlopCounterMode."

    def flops(self, i):
        j = i % N_BATCHES
        if j not in self._flops:
            with FlopCounterMode(display=False) as fc: self.step(j)
            self._flops[j] = fc.get_total_flops()
        return self._flops[j]


class OfficialVariant(_StepFlops):
    "The official I-JEPA step (see ijepa_baseline.py) at the tiny config of `preset`."

    def __init__(self, ij, precision="fp32", preset="tiny+ijepa", overrides=(), seed=0, device="cpu"):
        from ijepa_baseline import IJEPABaseline, tiny_from_hjepa
        from hjepa.config import get_config
        cfg = get_config(preset, list(overrides))
        self.impl = IJEPABaseline(ij, tiny_from_hjepa(cfg), precision=precision, seed=seed, device=device)
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # their collator samples positions from the global RNG
        B, S = cfg.data.batch_size, cfg.data.image_size
        self.batches = [self.impl.make_batch(torch.randn(B, 3, S, S, generator=g)) for _ in range(N_BATCHES)]
        self.batch_size = B
        self.info = dict(impl="official", precision=precision, batch_size=B,
                         context_len=[int(b[1][0].shape[1]) for b in self.batches],
                         target_tokens=[int(sum(m.shape[1] for m in b[2])) for b in self.batches])
        self._flops = {}

    def step(self, i): return self.impl.step(*self.batches[i % N_BATCHES])



class OursVariant(_StepFlops):
    "Our train step for a preset: forward, loss, backward, AdamW step, EMA (the trainer's step when exposed)."

    def __init__(self, preset="tiny+hjepa", precision="fp32", overrides=(), seed=0, compile=False, images=None,
                 device="cpu", sync=True):
        from hjepa.config import get_config
        from hjepa.losses import build_loss
        from hjepa.masks import BlockMasker
        from hjepa.models import HJEPA
        self.cfg = cfg = get_config(preset, [f"train.precision={precision}", *overrides])
        torch.manual_seed(seed)
        self.model = HJEPA(cfg).train()
        self.loss_fn = build_loss(cfg)
        self.masker = BlockMasker.from_config(cfg)
        B, S = cfg.data.batch_size, cfg.data.image_size
        g = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batches = [(torch.randn(B, 3, S, S, generator=g), self.masker(B, generator=g)) for _ in range(N_BATCHES)]
        self.batches = [(x.to(self.device), m.to(self.device)) for x, m in self.batches]
        self.batch_size, self.precision = B, precision
        self.info = dict(impl="hjepa", preset=preset, precision=precision, batch_size=B, overrides=list(overrides),
                         context_len=[int(m.context.shape[1]) for _, m in self.batches],
                         target_tokens=[[int(t.shape[1] * t.shape[2]) for t in m.targets] for _, m in self.batches])
        self._flops, self._k, self.sync = {}, 0, sync  # sync: wait for the GPU at the end of each step
        self._build_step(compile)
        self.info["step_source"] = self.step_source

    def _build_step(self, compile):
        "The trainer's `Trainer.optimizer_step` when hjepa.train has it; else the same step written out here."
        cfg = self.cfg
        try:
            from hjepa.train import Trainer
        except ImportError:
            Trainer = None
        if Trainer is not None and hasattr(Trainer, "optimizer_step"):
            import tempfile
            from hjepa.config import get_config
            out_dir = Path(tempfile.mkdtemp(prefix="hjepa-bench-")) / "run"  # setup() writes nothing
            tcfg = get_config(None, base=cfg.to_dict(), overrides=[f"train.out_dir={out_dir}", "train.val_every=0",
                                                                    f"train.compile={str(compile).lower()}",
                                                                    f"train.device={self.device.type}",
                                                                    "train.progress=false",
                                                                    f"train.threads={torch.get_num_threads()}"])
            model = self.model
            n = max(1, cfg.data.n_train // cfg.data.batch_size)
            self.trainer = Trainer(tcfg, model_fn=lambda c: model, loss_fn=lambda c: self.loss_fn,
                                   loader_fn=lambda c, split, epoch=0, start_batch=0, distributed=False: [None] * n)
            self.trainer.setup()
            self.step_source = "hjepa.train.Trainer.optimizer_step"
            labels = torch.zeros(cfg.data.batch_size, dtype=torch.long)
            self._labels = labels
            return
        self.trainer = None
        from hjepa.masks import Masks  # noqa: F401  (fallback: forward, loss, backward, AdamW, EMA)
        model = self.model
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([dict(params=[p for p in params if p.ndim > 1], weight_decay=cfg.optim.weight_decay),
                                      dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)],
                                     lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
        self.momentum = cfg.optim.ema[0]
        self.fwd = torch.compile(model) if compile else model
        self.step_source = "benchmark (forward, loss, backward, AdamW, EMA)"

    def _autocast(self):
        if self.precision == "bf16": return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, i):
        images, masks = self.batches[i % N_BATCHES]
        if self.trainer is not None:
            info = self.trainer.optimizer_step([(images, self._labels, masks)], self._k)
            self._k += 1
            if self.sync and self.device.type == "cuda": torch.cuda.synchronize(self.device)  # EMA kernels are queued last
            return info.get("loss")
        with self._autocast():
            out = self.fwd(images, masks)
            losses = self.loss_fn(out, self._k)
        loss = losses["loss"]
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if getattr(self.model, "target_encoder", None) is not None: self.model.ema_update(self.momentum)
        self._k += 1
        return float(loss.detach())



class MatmulVariant:
    "A large fp32 torch.mm: the machine's achievable matmul FLOP/s, measured between the steps."

    def __init__(self, n=2048):
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        self.batch_size, self.n = 1, n
        self.info = dict(impl="matmul", n=n)

    def step(self, i): torch.mm(self.a, self.b)

    def flops(self, i): return 2 * self.n ** 3


def make_variant(spec: str, ij=None, **kw):
    "`official:fp32`, `tiny+hjepa:bf16`, `tiny+ijepa:fp32:model.embed_dim=384;model.num_heads=6`, `matmul`."
    if spec == "matmul": return MatmulVariant()
    parts = spec.split(":")
    preset, precision = parts[0], parts[1] if len(parts) > 1 else "fp32"
    overrides = [o for o in ":".join(parts[2:]).split(";") if o] if len(parts) > 2 else []
    if preset == "official":
        if ij is None: raise RuntimeError("official baseline requested but the official code is not available")
        return OfficialVariant(ij, precision, overrides=overrides)
    return OursVariant(preset, precision, overrides=overrides, **kw)


def interleave(variants: dict, n_steps: int, warmup: int, log=print) -> dict:
    "Per-variant step times (s): warm-up each, then rounds A B C A B C ..., one step per variant per round."
    for name, v in variants.items():
        for i in range(warmup): v.step(i)
    times = {k: [] for k in variants}
    for r in range(n_steps):
        for name, v in variants.items():
            t0 = time.perf_counter(); v.step(r); times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        log(f"  {name:48s} {_median(ts)*1e3:8.1f} ms/step (median of {len(ts)})")
    return times


def _stats(v, ts) -> dict:
    med = _median(ts)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
    return dict(step_ms=med * 1e3, images_per_s=v.batch_size / med, iqr_ms=[q[0] * 1e3, q[2] * 1e3],
                times_ms=[t * 1e3 for t in ts], **v.info)


# ----------------------------------------------------------------------------------------------------------
# Subprocess probes: peak RSS of one variant; torch.compile on/off.
# ----------------------------------------------------------------------------------------------------------
def _rss_mb():
    "Peak RSS of this process, MB: VmHWM (ru_maxrss would carry the parent's peak across fork+exec)."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def probe_rss(spec, ij_src, steps=3):
    ij = _load_ij(ij_src) if spec.startswith("official") else None
    before = _rss_mb()
    v = make_variant(spec, ij)
    built = _rss_mb()
    for i in range(steps): v.step(i)
    return dict(peak_rss_mb=_rss_mb(), rss_after_import_mb=before, rss_after_build_mb=built)


def probe_compile(spec, steps, warmup, device="cpu", eager=None):
    "Eager against `train.compile=true` (every block compiled) for one variant spec; warm-up covers every batch."
    out = dict(spec=spec)
    eager = eager or make_variant(spec, device=device)
    t0 = time.perf_counter()
    try:
        comp = make_variant(spec, compile=True, device=device)
        for i in range(max(warmup, N_BATCHES)): comp.step(i)  # each batch's token counts compiled before timing
    except Exception as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
        return out
    out["compile_s"] = time.perf_counter() - t0
    ts = interleave(dict(eager=eager, compiled=comp), steps, warmup, log=lambda *a: None)
    out.update(ok=True, eager_ms=_median(ts["eager"]) * 1e3, compiled_ms=_median(ts["compiled"]) * 1e3,
               speedup=_median(ts["eager"]) / _median(ts["compiled"]))
    return out


def run_probe(kind, spec, args, timeout):
    "Run a probe in a fresh interpreter; returns its JSON dict or {'ok': False, 'error': ...}."
    cmd = [sys.executable, __file__, "--_probe", kind, "--_spec", spec, "--threads", str(args.threads),
           "--steps", str(args.compile_steps), "--warmup", str(args.warmup)]
    if args.ijepa_src: cmd += ["--ijepa-src", str(args.ijepa_src)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout} s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return dict(ok=False, error=(r.stderr.strip().splitlines() or ["no output"])[-1][:300])
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------
# The official MaskCollator clamps a block side to grid-1 and never places a block on the last row/column:
# at 8x8 its context block is always the top-left 7x7 (49 patches), so its context keeps ~12 tokens where
# hjepa's masker (full 8x8 allowed) keeps ~21. This context_scale gives hjepa's masker the same ~12.
MATCHED = "mask.context_scale=[0.75,0.77]"


def section_throughput(args, ij, log):
    "Images/s of ours (ijepa, hjepa) and official, fp32 and bf16, interleaved; MFU at width 192."
    specs = [f"{p}:{prec}" for prec in ("fp32", "bf16") for p in ("tiny+ijepa", "tiny+hjepa")]
    if ij is not None:  # + ours with the official's context coverage (see MATCHED)
        specs = [f"official:{prec}" for prec in ("fp32", "bf16")] + specs + [f"tiny+ijepa:{p}:{MATCHED}" for p in ("fp32", "bf16")]
    vs = {s: make_variant(s, ij) for s in specs}
    vs["matmul"] = MatmulVariant()
    log(f"throughput: {len(vs)} variants interleaved, {args.steps} steps after {args.warmup} warm-up")
    ts = interleave(vs, args.steps, args.warmup, log)
    res = {s: _stats(vs[s], ts[s]) for s in specs}
    mm = _median([2 * vs["matmul"].n ** 3 / t for t in ts["matmul"]])
    for s in specs:
        if ":fp32" in s:
            res[s]["flops_per_step"] = [vs[s].flops(i) for i in range(N_BATCHES)]
            ach = _median([vs[s].flops(i) / t for i, t in enumerate(ts[s])])
            res[s].update(achieved_gflops=ach / 1e9, mfu=ach / mm)
    res["matmul"] = dict(gflops=mm / 1e9, n=vs["matmul"].n)
    return res, vs


def section_mfu384(args, ij, log):
    "MFU of the fp32 step at width 384 (6 heads), ours (both presets) and official, with the matmul rate."
    ov = ["model.embed_dim=384", "model.num_heads=6"]
    specs = [f"tiny+ijepa:fp32:{';'.join(ov)}", f"tiny+hjepa:fp32:{';'.join(ov)}"]
    if ij is not None: specs.append(f"official:fp32:{';'.join(ov)}")
    vs = {s: make_variant(s, ij) for s in specs}
    vs["matmul"] = MatmulVariant()
    log("MFU at width 384")
    ts = interleave(vs, max(3, args.steps // 2) if args.quick else max(6, args.steps * 2 // 3), args.warmup, log)
    mm = _median([2 * vs["matmul"].n ** 3 / t for t in ts["matmul"]])
    res = {"matmul": dict(gflops=mm / 1e9)}
    for s in specs:
        ach = _median([vs[s].flops(i) / t for i, t in enumerate(ts[s])])
        res[s] = dict(_stats(vs[s], ts[s]), achieved_gflops=ach / 1e9, mfu=ach / mm,
                      flops_per_step=[vs[s].flops(i) for i in range(N_BATCHES)])
    return res


def _context_encoder_call(model, images, idx, grid):
    "Forward of the context encoder on kept tokens `idx` (B, Nc); adapts to hjepa.models' signature."
    enc = model.context_encoder
    for call in (lambda: enc(images, idx), lambda: enc(images, context=idx), lambda: enc(images, keep=idx),
                 lambda: enc(images, idx=idx)):
        try:
            return call()
        except TypeError:
            continue
    raise TypeError("could not call model.context_encoder(images, indices); see hjepa.models")


def section_kept_fraction(args, log):
    "Context-encoder forward+backward time vs kept-token fraction (tiny+hjepa, fp32)."
    from hjepa.config import get_config, grid_size
    from hjepa.models import HJEPA
    cfg = get_config("tiny+hjepa")
    torch.manual_seed(0)
    model = HJEPA(cfg).train()
    g = grid_size(cfg); N = g * g; B = cfg.data.batch_size
    images = torch.randn(B, 3, cfg.data.image_size, cfg.data.image_size)
    fracs = [0.125, 0.25, 0.5, 0.75, 1.0]
    gen = torch.Generator().manual_seed(0)

    class KF:
        batch_size = B; info = {}
        def __init__(self, n):
            self.idx = torch.stack([torch.randperm(N, generator=gen)[:n].sort().values for _ in range(B)])
        def step(self, i):
            out = _context_encoder_call(model, images, self.idx, (g, g))
            out = out[0] if isinstance(out, (tuple, list)) else out
            out.float().mean().backward()
            model.zero_grad(set_to_none=True)

    vs = {f: KF(max(1, round(f * N))) for f in fracs}
    log("context encoder vs kept fraction")
    ts = interleave({f"kept={f}": v for f, v in vs.items()}, max(5, args.steps // 2), args.warmup, log)
    full = _median(ts["kept=1.0"])
    return [dict(fraction=f, tokens=max(1, round(f * N)), ms=_median(ts[f"kept={f}"]) * 1e3,
                 relative_to_full=_median(ts[f"kept={f}"]) / full) for f in fracs]


def section_masks_loader(args, thr, log):
    """Mask generation per batch and data-loader batches, each relative to the step of the same preset.

    The loader is measured in both states of the procedural dataset's image cache: `first_epoch` renders every
    image it reads (a fresh dataset), `steady` reads images rendered before (every later epoch)."""
    from hjepa.config import get_config
    from hjepa.data import build_loader, clear_dataset_cache, raw_dataset
    from hjepa.masks import BlockMasker
    res, n = {}, 5 if args.quick else 15

    def loader_ms(cfg, masker):
        it = iter(build_loader(cfg, "train", masker=masker)); next(it)
        lt = []
        for _ in range(n):
            t0 = time.perf_counter(); next(it); lt.append(time.perf_counter() - t0)
        return _median(lt) * 1e3

    for preset in ("tiny+ijepa", "tiny+hjepa"):
        cfg = get_config(preset)
        masker = BlockMasker.from_config(cfg)
        B = cfg.data.batch_size
        if (n + 1) * B > cfg.data.n_train: raise ValueError(f"{n + 1} batches of {B} exceed data.n_train={cfg.data.n_train}")
        g = torch.Generator().manual_seed(0)
        for _ in range(2): masker(B, generator=g)
        mt = []
        for _ in range(max(10, args.steps)):
            t0 = time.perf_counter(); masker(B, generator=g); mt.append(time.perf_counter() - t0)
        clear_dataset_cache()                       # a fresh dataset: nothing rendered yet
        first = loader_ms(cfg, masker)
        ds = raw_dataset(cfg, "train")
        for i in range(len(ds)): ds[i]              # render the whole split once, as the first epoch does
        steady = loader_ms(cfg, masker)
        step_ms = min(thr[f"{preset}:fp32"]["step_ms"], thr[f"{preset}:bf16"]["step_ms"])
        res[preset] = dict(mask_ms=_median(mt) * 1e3, loader_ms_per_batch=steady, loader_first_epoch_ms=first,
                           loader_batches_per_s=1e3 / steady, num_workers=cfg.data.num_workers,
                           step_ms_fastest=step_ms, mask_fraction=_median(mt) * 1e3 / step_ms,
                           loader_fraction=steady / step_ms, loader_fraction_first_epoch=first / step_ms)
        r = res[preset]
        log(f"  {preset}: masks {r['mask_ms']:.2f} ms/batch ({r['mask_fraction']:.1%} of step), loader "
            f"{steady:.1f} ms/batch steady ({r['loader_fraction']:.1%}), {first:.1f} ms/batch in the first epoch "
            f"({r['loader_fraction_first_epoch']:.1%}; num_workers={cfg.data.num_workers}, includes masks)")
    return res


def section_scaling(args, log):
    "tiny+hjepa fp32 step time vs grid size (8x8 -> 16x16 patches, batch 64) and vs batch size (grid 8x8)."
    grids = [8, 16] if args.quick else [8, 12, 16]
    batches = [16, 64] if args.quick else [16, 32, 64, 128]
    steps = 3 if args.quick else 5
    log("scaling: grid")
    vg = {f"grid={gr}": make_variant(f"tiny+hjepa:fp32:data.image_size={4 * gr}") for gr in grids}
    tg = interleave(vg, steps, 1, log)
    log("scaling: batch")
    vb = {f"batch={b}": make_variant(f"tiny+hjepa:fp32:data.batch_size={b}") for b in batches}
    tb = interleave(vb, steps, 1, log)
    base_g, base_b = _median(tg[f"grid={grids[0]}"]), _median(tb[f"batch={batches[0]}"])
    return dict(
        grid=[dict(grid=gr, tokens=gr * gr, step_ms=_median(tg[f"grid={gr}"]) * 1e3,
                   relative=_median(tg[f"grid={gr}"]) / base_g) for gr in grids],
        batch=[dict(batch=b, step_ms=_median(tb[f"batch={b}"]) * 1e3, ms_per_image=_median(tb[f"batch={b}"]) * 1e3 / b,
                    relative=_median(tb[f"batch={b}"]) / base_b) for b in batches])


def _op_counts(v, i=0):
    "Number of aten op calls (and top ops by self CPU time) in one step, from torch.profiler."
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof: v.step(i)
    ev = prof.key_averages()
    n_ops = sum(e.count for e in ev if e.key.startswith("aten::"))
    return n_ops, ev


def section_profile(args, log):
    "torch.profiler top ops of our step; aten op-call count at batch 16 vs 64 (grows => per-sample loop)."
    out = {}
    for preset in ("tiny+ijepa", "tiny+hjepa"):
        small = make_variant(f"{preset}:fp32:data.batch_size=16")
        big = make_variant(f"{preset}:fp32")
        for v in (small, big): v.step(0)
        n16, _ = _op_counts(small, 1)
        n64, ev = _op_counts(big, 1)
        rows = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:15]
        tot = sum(e.self_cpu_time_total for e in ev)
        top = [dict(op=e.key, calls=e.count, self_ms=e.self_cpu_time_total / 1e3,
                    self_pct=e.self_cpu_time_total / max(tot, 1)) for e in rows]
        # Python-level: cProfile of one step, functions by own time and call count
        pr = cProfile.Profile(); pr.enable(); big.step(2); pr.disable()
        st = pstats.Stats(pr)
        py = sorted(((k, v[1], v[2], v[3]) for k, v in st.stats.items()), key=lambda r: -r[2])[:12]
        py_top = [dict(func=f"{Path(k[0]).name}:{k[1]}({k[2]})", calls=nc, own_ms=tt * 1e3, cum_ms=ct * 1e3)
                  for k, nc, tt, ct in py]
        # masker: python calls at batch 16 vs 64
        mcalls = {}
        for B in (16, 64):
            pr = cProfile.Profile(); pr.enable(); big.masker(B, generator=torch.Generator().manual_seed(0)); pr.disable()
            mcalls[B] = sum(v[1] for v in pstats.Stats(pr).stats.values())
        out[preset] = dict(aten_ops_b16=n16, aten_ops_b64=n64, op_growth=n64 / n16, top_ops=top, python_top=py_top,
                           masker_py_calls_b16=mcalls[16], masker_py_calls_b64=mcalls[64],
                           masker_call_growth=mcalls[64] / mcalls[16])
        log(f"  {preset}: aten ops/step b16={n16} b64={n64} (x{n64 / n16:.2f}); "
            f"masker python calls b16={mcalls[16]} b64={mcalls[64]} (x{mcalls[64] / mcalls[16]:.2f})")
        for t in top[:8]:
            log(f"    {t['op']:45s} {t['calls']:6d} calls {t['self_ms']:8.1f} ms {t['self_pct']:6.1%}")
    return out


VIT_B16 = ["data.image_size=224", "model.patch_size=16", "model.embed_dim=768", "model.depth=12", "model.num_heads=12",
           "model.pred_dim=384", "model.pred_depth=6", "model.pred_heads=12"]


def section_cuda(args, log, device="cuda", big=tuple(VIT_B16)):
    """On a CUDA machine: step time of the tiny config and of a ViT-B/16 at 224 px (`big`), fp32 vs bf16,
    SDPA vs flash-attn (when installed), and compiled blocks vs eager. `device`/`big` exist for a CPU smoke test."""
    import importlib.util
    big = list(big)
    specs = {f"tiny+ijepa:{p}": (p, []) for p in ("fp32", "bf16")}
    specs.update({f"vitb16+ijepa:{p}:sdpa": (p, big + ["model.attn_backend=sdpa"]) for p in ("fp32", "bf16")})
    flash = importlib.util.find_spec("flash_attn") is not None
    if flash: specs["vitb16+ijepa:bf16:flash"] = ("bf16", big + ["model.attn_backend=flash"])
    vs = {k: OursVariant("tiny+ijepa", p, overrides=ov, device=device) for k, (p, ov) in specs.items()}
    log(f"{device}: {len(vs)} variants interleaved" + ("" if flash else " (flash_attn not installed)"))
    ts = interleave(vs, args.steps, args.warmup, log)
    res = dict(device=torch.cuda.get_device_name() if device == "cuda" else str(device), flash_attn=flash,
               steps={k: _stats(vs[k], ts[k]) for k in specs})
    st = res["steps"]
    res["bf16_speedup_vitb16"] = st["vitb16+ijepa:fp32:sdpa"]["step_ms"] / st["vitb16+ijepa:bf16:sdpa"]["step_ms"]
    if flash: res["flash_speedup_vitb16_bf16"] = st["vitb16+ijepa:bf16:sdpa"]["step_ms"] / st["vitb16+ijepa:bf16:flash"]["step_ms"]
    spec = "tiny+ijepa:bf16:" + ";".join(big + ["model.attn_backend=sdpa"])  # the eager bf16 ViT-B/16 step above
    res["compile"] = probe_compile(spec, args.steps, args.warmup, device, eager=vs["vitb16+ijepa:bf16:sdpa"])
    return res


# ----------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------
def targets(R) -> list:
    "Each issue-10 target with its measured value, threshold and met / not met (None: not measured)."
    T = []

    def add(name, measured, op, thr, detail=""):
        met = None if measured is None or op == "info" else (measured >= thr if op == ">=" else measured <= thr)
        T.append(dict(target=name, measured=measured, op=op, threshold=thr, met=met, detail=detail))

    th = R.get("throughput", {})
    for prec in ("fp32", "bf16"):
        o, m = th.get(f"official:{prec}"), th.get(f"tiny+ijepa:{prec}")
        add(f"ijepa images/s vs official ({prec})", m and o and m["images_per_s"] / o["images_per_s"], ">=", 1.3,
            "" if o else "official baseline not available")
    for prec in ("fp32", "bf16"):
        o, m = th.get(f"official:{prec}"), th.get(f"tiny+ijepa:{prec}:{MATCHED}")
        add(f"  same, context tokens matched ({prec})", m and o and m["images_per_s"] / o["images_per_s"], ">=", 1.3,
            "supplementary: ours with the official's ~12 context tokens" if o else "official baseline not available")
    o, m = th.get("official:fp32"), th.get(f"tiny+ijepa:fp32:{MATCHED}")
    ok = o and m and "achieved_gflops" in o and "achieved_gflops" in m
    add("  same work: achieved FLOP/s, ijepa / official (fp32)", m["achieved_gflops"] / o["achieved_gflops"] if ok else None,
        ">=", 1.3, "supplementary: speed per FLOP, independent of how many tokens each masker keeps; "
        f"official MFU {o['mfu']:.0%}, ours {m['mfu']:.0%}" if ok else "official baseline not available")
    for prec in ("fp32", "bf16"):
        a, b = th.get(f"tiny+ijepa:{prec}"), th.get(f"tiny+hjepa:{prec}")
        add(f"hjepa/ijepa step time ({prec})", a and b and b["step_ms"] / a["step_ms"], "<=", 1.2)
    for p in ("tiny+ijepa", "tiny+hjepa"):
        a, b = th.get(f"{p}:fp32"), th.get(f"{p}:bf16")
        add(f"bf16 speed-up over fp32 ({p.split('+')[1]})", a and b and a["step_ms"] / b["step_ms"], ">=", 2.0)
    m384 = R.get("mfu384", {})
    for p in ("tiny+ijepa", "tiny+hjepa"):
        r = next((v for k, v in m384.items() if k.startswith(p)), None)
        add(f"MFU fp32 width 384 ({p.split('+')[1]})", r and r["mfu"], ">=", 0.35)
    ml = R.get("masks_loader", {})
    for p in ("tiny+ijepa", "tiny+hjepa"):
        r = ml.get(p)
        add(f"mask generation / step ({p.split('+')[1]})", r and r["mask_fraction"], "<=", 0.05,
            "vs the faster (bf16) step")
        add(f"data loading / step ({p.split('+')[1]})", r and r["loader_fraction"], "<=", 0.05,
            "main-process cost per batch incl. masks, vs the faster step; images rendered before (every epoch after the first)")
        first = r and r.get("loader_fraction_first_epoch")
        if first is not None:
            add(f"data loading / step, first epoch ({p.split('+')[1]})", first, "info", None,
                "the procedural images are rendered as they are first read")
    pf = R.get("profile", {})
    for p in ("tiny+ijepa", "tiny+hjepa"):
        r = pf.get(p)
        add(f"no per-sample loop: aten ops b64/b16 ({p.split('+')[1]})", r and r["op_growth"], "<=", 1.05,
            "op-call count per step must not grow with batch size")
    return T


def _is_pct(t): return t["target"].startswith(("MFU", "mask generation", "data loading"))


def fmt_target(t) -> tuple:
    "(measured, goal, status) strings of one target row."
    pct = _is_pct(t)
    m = "n/a" if t["measured"] is None else (f"{t['measured']:.1%}" if pct else f"{t['measured']:.2f}x")
    if t["op"] == "info": return m, "-", "info"
    goal = f"{t['op']} {t['threshold']:.0%}" if pct else f"{t['op']} {t['threshold']}x"
    st = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
    return m, goal, st


def print_table(T, log=print):
    log(f"\n{'target':46s} {'measured':>9s} {'goal':>9s}  status")
    for t in T:
        m, goal, st = fmt_target(t)
        log(f"{t['target']:46s} {m:>9s} {goal:>9s}  {st}" + (f"  ({t['detail']})" if t["detail"] else ""))


# ----------------------------------------------------------------------------------------------------------
def _load_ij(src):
    from ijepa_baseline import load_ijepa
    return load_ijepa(src)


def run(args, log=print) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.time()
    R = dict(meta=dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                       cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=args.threads,
                       machine=platform.processor() or platform.machine(), quick=args.quick, steps=args.steps,
                       warmup=args.warmup, loadavg_start=os.getloadavg(), python=platform.python_version()),
             errors={})
    ij = None
    try:
        ij = _load_ij(args.ijepa_src)
    except Exception as e:
        R["errors"]["official"] = f"{type(e).__name__}: {e}"
    if ij is None:
        log("official I-JEPA code not found (pass --ijepa-src or set IJEPA_SRC to a checkout holding src/): "
            "baseline and its ratios skipped")
    R["meta"]["ijepa_src"] = str(ij.root) if ij is not None else None
    try:
        import hjepa.models, hjepa.masks, hjepa.losses  # noqa: F401
    except Exception as e:
        R["errors"]["hjepa"] = f"{type(e).__name__}: {e}"
        log(f"hjepa modules missing ({e}); only the official baseline can be measured")
        if ij is not None:
            vs = {f"official:{p}": make_variant(f"official:{p}", ij) for p in ("fp32", "bf16")}
            ts = interleave(vs, args.steps, args.warmup, log)
            R["throughput"] = {k: _stats(v, ts[k]) for k, v in vs.items()}
        R["targets"] = targets(R); print_table(R["targets"], log)
        return R

    def section(name, fn, *a):
        if name in args.skip: return None
        t0 = time.time()
        try:
            R[name] = fn(*a)
        except Exception as e:
            R["errors"][name] = f"{type(e).__name__}: {e}"
            log(f"section {name} failed: {type(e).__name__}: {e}")
            if args.verbose: traceback.print_exc()
        R.setdefault("section_s", {})[name] = time.time() - t0

    section("throughput", lambda: section_throughput(args, ij, log)[0])
    section("mfu384", section_mfu384, args, ij, log)
    section("kept_fraction", section_kept_fraction, args, log)
    if "throughput" in R: section("masks_loader", section_masks_loader, args, R["throughput"], log)
    section("scaling", section_scaling, args, log)
    section("profile", section_profile, args, log)
    if torch.cuda.is_available(): section("cuda", section_cuda, args, log)
    if "rss" not in args.skip:
        log("peak RSS (one subprocess per variant)")
        specs = [f"{p}:{q}" for q in ("fp32", "bf16") for p in (["official"] if ij else []) + ["tiny+ijepa", "tiny+hjepa"]]
        R["rss"] = {s: run_probe("rss", s, args, timeout=300) for s in specs}
        for s, r in R["rss"].items():
            if "throughput" in R and s in R["throughput"]: R["throughput"][s]["peak_rss_mb"] = r.get("peak_rss_mb")
            log(f"  {s:20s} peak RSS {r.get('peak_rss_mb', float('nan')):8.0f} MB" if "peak_rss_mb" in r else f"  {s}: {r}")
    if "compile" not in args.skip and (not args.quick or args.compile):  # CPU; the CUDA section has its own
        log(f"torch.compile on/off (subprocess, limit {args.compile_timeout} s)")
        R["compile"] = {s: run_probe("compile", s, args, timeout=args.compile_timeout)
                        for s in ("tiny+hjepa:fp32",)}
        log(f"  {R['compile']}")
    R["meta"]["loadavg_end"] = os.getloadavg()
    R["meta"]["total_s"] = time.time() - t_start
    R["targets"] = targets(R)
    print_table(R["targets"], log)
    return R


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="hjepa train-step benchmark suite (issue 10)")
    ap.add_argument("--out", default="benchmarks/results.json", help="JSON results path")
    ap.add_argument("--quick", action="store_true", help="fewer steps and sizes (smoke run)")
    ap.add_argument("--ijepa-src", default=None, help="official I-JEPA checkout (holds src/); default $IJEPA_SRC")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10, quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (default 3, quick 2)")
    ap.add_argument("--compile", action="store_true", help="also run the torch.compile probe in quick mode")
    ap.add_argument("--compile-timeout", type=int, default=600)
    ap.add_argument("--compile-steps", type=int, default=None)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: throughput,mfu384,kept_fraction,"
                                               "masks_loader,scaling,profile,cuda,rss,compile")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_spec", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.steps = a.steps or (5 if a.quick else 10)
    a.warmup = a.warmup or (2 if a.quick else 3)
    a.compile_steps = a.compile_steps or a.steps
    a.skip = set(s for s in a.skip.split(",") if s)
    return a


def main(argv=None):
    a = parse_args(argv)
    if a._probe:
        torch.set_num_threads(a.threads)
        r = probe_rss(a._spec, a.ijepa_src) if a._probe == "rss" else probe_compile(a._spec, a.steps, a.warmup)
        print(json.dumps(r))
        return 0
    write_json(run(a), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
