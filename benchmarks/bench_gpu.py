"""hjepa GPU benchmark (issue 32): one command, a JSON file and a table of targets with met / not met.

    python3 benchmarks/bench_gpu.py --out /tmp/gpu.json             # full, ~6-8 min on one H100/H200
    python3 benchmarks/bench_gpu.py --quick --out /tmp/gpu.json     # ~3-4 min
    python benchmarks/bench_gpu.py --device cpu --tiny --out x.json # CPU smoke of every code path (tests)

Sections (each caught on its own: a failure is a row "not met: <error>", never a crashed run; each is skipped
with a row "n/a" once the time budget `--budget-s` is spent):
* throughput: ViT-B/16 at 224 px, `ijepa` and `hjepa` (2 levels: 3 do not fit a 14x14 grid), bf16, SDPA, at
  each `--batches`; step time by CUDA events, FLOPs by FlopCounterMode, MFU against the device's dense bf16
  peak (table below, else a measured matmul rate), peak GPU memory.
* kernels: which SDPA op ran (a dispatch-mode record of one step), and whether a step runs under
  `torch.nn.attention.sdpa_kernel` restricted to each of flash / memory-efficient / cuDNN; flash-attn when installed.
* syncs: host-device synchronisations in one trainer step (`torch.cuda.set_sync_debug_mode("warn")`), by site;
  whether AdamW is fused.
* official: the official I-JEPA step (`$IJEPA_SRC`, see ijepa_baseline.py) against ours, same model and batch.
* compile: eager vs `torch.compile` in a subprocess each (time limit): regional (`train.compile`), whole model,
  and the tiny model with CUDA graphs (`mode="reduce-overhead"`); losses of the first steps compared.
* loader: a generated ImageFolder of JPEGs through `hjepa.data.build_loader` (workers decode, masks sampled in
  workers, pinned memory, non_blocking copies) feeding the trainer step: the stall fraction it adds, and the
  CPU cores the loader needs at the measured GPU throughput.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import gc
import json
import linecache
import math
import os
import platform
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
from torch.utils._python_dispatch import TorchDispatchMode

import bench as B  # noqa: E402  (variants, ViT-B/16 overrides, CPU SDPA FLOP formulas)

# Dense bf16 tensor-core peak by device-name substring (datasheets, without sparsity); first match wins.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("L4", 121e12)]
VITB16 = B.VIT_B16 + ["model.attn_backend=sdpa"]
HJEPA_224 = ["model.n_levels=2", "mask.n_targets=[4,2]"]  # a 14x14 grid halves once into 2x2 cells or more
SMOKE = ["data.image_size=32", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
         "model.pred_dim=16", "model.pred_depth=1", "model.pred_heads=2", "model.attn_backend=sdpa"]
PRESETS = {"ijepa": ("tiny+ijepa", []), "hjepa": ("tiny+hjepa", HJEPA_224)}
SDPA_OPS = {"flash": "_scaled_dot_product_flash_attention", "efficient": "_scaled_dot_product_efficient_attention",
            "cudnn": "_scaled_dot_product_cudnn_attention"}
STATUSES = ("met", "NOT met", "n/a", "info")


def _med(xs): return statistics.median(xs) if xs else float("nan")
def _err(e): return f"{type(e).__name__}: " + ((str(e).strip().splitlines() or [""])[0][:200])


def cuda(dev): return torch.device(dev).type == "cuda"


def sync(dev):
    if cuda(dev): torch.cuda.synchronize()


def free(dev):
    gc.collect()
    if cuda(dev): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_flops(dev, log):
    "(FLOP/s, source): the dense bf16 peak from PEAK_BF16, else a measured matmul rate (bf16 on CUDA, fp32 on CPU)."
    name = torch.cuda.get_device_name() if cuda(dev) else platform.processor() or "cpu"
    for k, v in PEAK_BF16:
        if cuda(dev) and k in name: return v, f"{name}: datasheet dense bf16 peak {v / 1e12:.0f} TFLOP/s ({k})"
    n, dt = (8192, torch.bfloat16) if cuda(dev) else (512, torch.float32)
    a, b = (torch.randn(n, n, device=dev, dtype=dt) for _ in range(2))
    for _ in range(3): a @ b
    sync(dev); t = time.perf_counter()
    for _ in range(10): a @ b
    sync(dev); r = 10 * 2 * n ** 3 / (time.perf_counter() - t)
    return r, f"{name}: not in the peak table; measured {n}^3 {str(dt)[6:]} matmul {r / 1e12:.3f} TFLOP/s used as peak"


class Ops(TorchDispatchMode):
    "Counts the attention ops (SDPA kernels, flash-attn) dispatched inside the context."

    def __init__(self):
        super().__init__(); self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        n = func._schema.name
        if "scaled_dot_product" in n or "flash" in n: self.ops[n.split("::")[-1]] += 1
        return func(*args, **(kwargs or {}))


def kernel_name(ops) -> str:
    "Which attention kernel a step's op record shows (forward ops only)."
    fwd = [o for o in ops if not o.endswith("backward")]
    if any("flash_attn" in o and "scaled" not in o for o in fwd): return "flash-attn (package)"
    for k, op in SDPA_OPS.items():
        if any(o.startswith(op) for o in fwd): return k
    return "math (no fused SDPA op)"


def time_steps(v, steps, warmup, dev) -> list:
    "Per-step times (ms): CUDA events on the GPU, perf_counter on the CPU; batches cycle as in bench.py."
    for i in range(warmup): v.step(i)
    sync(dev)
    if not cuda(dev):
        ts = []
        for i in range(steps):
            t = time.perf_counter(); v.step(i); ts.append((time.perf_counter() - t) * 1e3)
        return ts
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for i, (a, b) in enumerate(ev):
        a.record(); v.step(i); b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in ev]


def flops_per_step(v) -> float:
    return statistics.mean(v.flops(i) for i in range(B.N_BATCHES))


def build(a, preset, batch, extra=(), **kw):
    name, ov = PRESETS[preset]
    return B.OursVariant(name, "bf16", overrides=[*a.model, *ov, *extra, f"data.batch_size={batch}"], device=a.device, **kw)


def gpu_busy(v, steps, dev) -> float | None:
    "Kernel time (union of CUDA kernel/memcpy intervals, torch.profiler) per step, ms; None off CUDA."
    if not cuda(dev): return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    sync(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(steps): v.step(i)
        sync(dev)
    iv = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    tot, end = 0.0, -math.inf
    for s, e in iv:
        if e <= end: continue
        tot += e - max(s, end); end = e
    return tot / 1e3 / steps


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------
def section_throughput(a, R, log):
    res = {}
    for preset in PRESETS:
        for b in a.batches:
            key = f"{preset}:b{b}"
            free(a.device)
            try:
                v = build(a, preset, b)
                ts = time_steps(v, a.steps, a.warmup, a.device)
                fl = flops_per_step(v)
                mem = torch.cuda.max_memory_allocated() / 2**30 if cuda(a.device) else None
                step = _med(ts) / 1e3
                res[key] = dict(batch=b, step_ms=step * 1e3, iqr_ms=statistics.quantiles(ts, n=4)[::2] if len(ts) > 1 else ts,
                                images_per_s=b / step, gflop_per_image=fl / b / 1e9, achieved_tflops=fl / step / 1e12,
                                mfu=fl / step / R["peak_flops"], peak_mem_gib=mem,
                                context_len=v.info["context_len"], target_tokens=v.info["target_tokens"])
                r = res[key]
                log(f"  {key:10s} {r['step_ms']:8.1f} ms {r['images_per_s']:8.0f} img/s  MFU {r['mfu']:6.1%}  "
                    f"{r['gflop_per_image']:.3g} GFLOP/img  peak mem {mem or 0:.1f} GiB")
                del v
            except Exception as e:  # out of memory at the largest batch is a result, not a crash
                res[key] = dict(batch=b, error=_err(e)); log(f"  {key}: {_err(e)}")
    for preset in PRESETS:
        ok = [r for k, r in res.items() if k.startswith(preset + ":") and "error" not in r]
        if ok: res[f"{preset}:best"] = max(ok, key=lambda r: r["images_per_s"])["batch"]
    return res


def section_kernels(a, R, log):
    "Default SDPA kernel, and a step under sdpa_kernel() restricted to each fused backend; flash-attn if installed."
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = dict(flash=SDPBackend.FLASH_ATTENTION, efficient=SDPBackend.EFFICIENT_ATTENTION,
                    cudnn=SDPBackend.CUDNN_ATTENTION)
    res, b = {}, min(a.batches)
    for preset in PRESETS:
        free(a.device)
        v = build(a, preset, b)
        v.step(0)
        with Ops() as o: v.step(1)
        r = res[preset] = dict(default=kernel_name(o.ops), default_ops=dict(o.ops))
        base = r["default_ms"] = _med(time_steps(v, 3, 1, a.device))
        for name, be in backends.items():
            try:
                with sdpa_kernel([be]):
                    with Ops() as o: v.step(2)
                    ms = _med(time_steps(v, 3, 1, a.device))
                r[name] = dict(ok=True, ran=kernel_name(o.ops), step_ms=ms, vs_default=ms / base)
            except Exception as e:
                r[name] = dict(ok=False, error=_err(e))
        log(f"  {preset}: default kernel {r['default']}; " + "; ".join(
            f"{n} {'ok ' + format(r[n]['step_ms'], '.1f') + ' ms' if r[n]['ok'] else r[n]['error']}" for n in backends))
        del v
    from hjepa.models import _flash_available
    res["flash_attn_installed"] = _flash_available()
    if res["flash_attn_installed"] and cuda(a.device):
        try:
            free(a.device)
            v = build(a, "ijepa", b, ["model.attn_backend=flash"])
            v.step(0)
            with Ops() as o: v.step(1)
            res["flash_attn"] = dict(ok=True, ran=kernel_name(o.ops), step_ms=_med(time_steps(v, 3, 1, a.device)),
                                     sdpa_step_ms=res["ijepa"]["default_ms"])
            del v
        except Exception as e:
            res["flash_attn"] = dict(ok=False, error=_err(e))
    return res


def section_syncs(a, R, log):
    "Host-device syncs in one trainer step by site (CUDA sync debug mode); fused AdamW."
    free(a.device)
    v = build(a, "ijepa", min(a.batches), sync=False)
    res = dict(fused_adamw=bool(v.trainer.optimizer.defaults.get("fused")))
    if not cuda(a.device):
        res["note"] = "device syncs exist only on CUDA"
        return res
    v.step(0); v.step(1); torch.cuda.synchronize()
    import tempfile
    # A sync in Python-called code is a Python warning with its file and line; one in autograd's device
    # thread (backward) goes to the C++ handler, i.e. to fd 2: count those from a captured stderr.
    with warnings.catch_warnings(record=True) as w, tempfile.TemporaryFile() as err:
        warnings.simplefilter("always")
        sys.stderr.flush(); fd = os.dup(2); os.dup2(err.fileno(), 2)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            v.step(2)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            os.dup2(fd, 2); os.close(fd)
        err.seek(0)
        other = err.read().decode(errors="replace").count("synchronizing CUDA operation")
    sites = collections.Counter(f"{Path(x.filename).relative_to(ROOT) if str(x.filename).startswith(str(ROOT)) else x.filename}"
                                f":{x.lineno}: {linecache.getline(x.filename, x.lineno).strip()[:80]}"
                                for x in w if "synchroniz" in str(x.message))
    torch.cuda.synchronize()
    # the trainer's own reads (loss finite, grad norm, flags, weights finite) are logged / guard values
    if other: sites["(autograd device thread, no Python frame)"] = other
    logged = {k: n for k, n in sites.items() if k.startswith("hjepa/train.py")}
    res.update(total=sum(sites.values()), sites=dict(sites), logged=sum(logged.values()),
               unlogged=sum(sites.values()) - sum(logged.values()))
    log(f"  host syncs in one step: {res['total']} ({res['logged']} in the trainer's logged reads)")
    for k, n in sites.items(): log(f"    {n} x {k}")
    return res


def section_official(a, R, log):
    ij = B._load_ij(a.ijepa_src)
    if ij is None: return dict(skipped="official I-JEPA code not found (--ijepa-src / $IJEPA_SRC)")
    best = R.get("throughput", {}).get("ijepa:best", min(a.batches))
    res = {}
    for b in sorted({min(a.batches), best}):
        free(a.device)
        try:
            ours = build(a, "ijepa", b)
            theirs = B.OfficialVariant(ij, "bf16", preset="tiny+ijepa", overrides=[*a.model, f"data.batch_size={b}"],
                                       device=a.device)
            for i in range(a.warmup): ours.step(i); theirs.step(i)
            to, tt = [], []
            for i in range(a.steps):  # interleaved: ours, theirs, ours, ...
                to += time_steps(ours, 1, 0, a.device); tt += time_steps(theirs, 1, 0, a.device)
            fo, ft = flops_per_step(ours), flops_per_step(theirs)
            so, st = _med(to) / 1e3, _med(tt) / 1e3
            res[f"b{b}"] = dict(batch=b, ours_ms=so * 1e3, official_ms=st * 1e3, ours_images_per_s=b / so,
                                official_images_per_s=b / st, images_per_s_ratio=st / so,
                                ours_gflop_per_image=fo / b / 1e9, official_gflop_per_image=ft / b / 1e9,
                                achieved_flops_ratio=(fo / so) / (ft / st), ours_mfu=fo / so / R["peak_flops"],
                                official_mfu=ft / st / R["peak_flops"], official_context_len=theirs.info["context_len"],
                                ours_context_len=ours.info["context_len"])
            r = res[f"b{b}"]
            log(f"  batch {b}: ours {r['ours_ms']:.1f} ms, official {r['official_ms']:.1f} ms: images/s x"
                f"{r['images_per_s_ratio']:.2f}, achieved FLOP/s x{r['achieved_flops_ratio']:.2f}")
            del ours, theirs
        except Exception as e:
            res[f"b{b}"] = dict(batch=b, error=_err(e)); log(f"  batch {b}: {_err(e)}")
    res["batch"] = best
    return res


COMPILE_PROBES = {  # name -> (model: 'big' | 'tiny', preset, how); run in this order, the slowest last
    "regional_vitb16": ("big", "ijepa", "regional"),
    "regional_static_vitb16": ("big", "ijepa", "regional-static"),  # only when regional (dynamic=True) failed
    "cudagraphs_tiny": ("tiny", "ijepa", "reduce-overhead"),
    "whole_vitb16": ("big", "ijepa", "whole"),
}


def probe_compile(a, name) -> dict:
    "Eager and compiled copies (same init, same batches): losses of the first steps, step times, GPU busy time."
    which, preset, how = COMPILE_PROBES[name]
    model = a.model if which == "big" else a.tiny_model
    b = min(a.batches) if which == "big" else 64
    mk = lambda **kw: B.OursVariant(PRESETS[preset][0], "bf16", overrides=[*model, *PRESETS[preset][1], f"data.batch_size={b}"],
                                    device=a.device, **kw)
    eager = mk()
    comp = mk(compile=how == "regional")
    if how == "regional-static":  # as compile_blocks, but one static graph per token count
        from hjepa.models import Block
        for m in comp.model.modules():
            if isinstance(m, Block): m.compile(dynamic=False)
    elif how != "regional":
        comp.trainer.fwd = torch.compile(comp.model, mode=None if how == "whole" else how)
        if how == "reduce-overhead":  # a new CUDA-graph iteration per step
            inner = comp.step
            comp.step = lambda i: (torch.compiler.cudagraph_mark_step_begin(), inner(i))[1]
    n = B.N_BATCHES
    le = [eager.step(i) for i in range(n)]
    t = time.perf_counter()
    lc = [comp.step(i) for i in range(n)]  # compiles each batch's shapes
    compile_s = time.perf_counter() - t
    rel = max(abs(x - y) / max(abs(x), 1e-6) for x, y in zip(le, lc))
    te, tc = [], []
    for i in range(a.steps):
        te += time_steps(eager, 1, 0, a.device); tc += time_steps(comp, 1, 0, a.device)
    out = dict(ok=True, how=how, batch=b, compile_s=compile_s, loss_eager=le, loss_compiled=lc, loss_rel_diff=rel,
               eager_ms=_med(te), compiled_ms=_med(tc), speedup=_med(te) / _med(tc))
    if cuda(a.device):
        for k, v in (("eager", eager), ("compiled", comp)):
            try:
                busy = gpu_busy(v, 4, a.device)
                out[f"{k}_gpu_busy_ms"], out[f"{k}_gpu_busy_fraction"] = busy, busy / out[f"{k}_ms"]
            except Exception as e:
                out[f"{k}_gpu_busy_error"] = _err(e)
    return out


def section_compile(a, R, log, budget_end):
    if not cuda(a.device) and not a.compile:
        return dict(skipped="torch.compile probes run on CUDA (or with --compile)")
    res = {}
    names = [n for n in COMPILE_PROBES if not (a.quick and n == "whole_vitb16")]
    for n in names:
        if n == "regional_static_vitb16" and res.get("regional_vitb16", {}).get("ok", True): continue
        left = budget_end - time.time()
        limit = int(min(a.compile_timeout, left - 5))
        if limit < 30: res[n] = dict(ok=False, error="not run: time budget spent"); continue
        free(a.device)
        cmd = [sys.executable, __file__, "--_probe", n, "--device", a.device, "--steps", str(a.steps)] + (["--tiny"] if a.smoke else [])
        t = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
            lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
            if p.returncode or not lines:
                err = [l for l in p.stderr.strip().splitlines() if "Error" in l] or p.stderr.strip().splitlines() or ["no output"]
                res[n] = dict(ok=False, error=err[-1][:300])
            else:
                res[n] = json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            res[n] = dict(ok=False, error=f"timed out after {limit} s")
        res[n]["wall_s"] = time.time() - t
        r = res[n]
        log(f"  {n}: " + (f"{r['eager_ms']:.1f} -> {r['compiled_ms']:.1f} ms (x{r['speedup']:.2f}), compile {r['compile_s']:.0f} s, "
                          f"loss rel diff {r['loss_rel_diff']:.1e}" if r.get("ok") else r["error"]))
    return res


def make_jpegs(root: Path, n: int, px: int, log) -> float:
    "n JPEGs of px x px (smooth shapes plus noise, ~ photo-sized files) in 100 class folders; reused if present."
    from concurrent.futures import ProcessPoolExecutor
    done = root / f".done-{n}-{px}"
    if done.exists(): return 0.0
    t = time.time()
    with ProcessPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as ex:
        list(ex.map(_jpeg_chunk, [(str(root), k, min(n, k + 500), px) for k in range(0, n, 500)]))
    done.touch()
    log(f"  wrote {n} JPEGs of {px} px to {root} in {time.time() - t:.1f} s")
    return time.time() - t


def _jpeg_chunk(args):
    import numpy as np
    from PIL import Image
    root, k0, k1, px = args
    rng = np.random.default_rng(k0)
    for k in range(k0, k1):
        d = Path(root) / "train" / f"c{k % 100:03d}"; d.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = np.asarray(Image.fromarray(low).resize((px, px), Image.BICUBIC), dtype=np.int16)
        im = (im + rng.normal(0, 12, im.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(im).save(d / f"{k:06d}.jpg", quality=90)


def section_loader(a, R, log):
    "JPEG ImageFolder -> build_loader (workers decode + sample masks) -> trainer step: stall fraction, cores needed."
    from hjepa.config import get_config
    from hjepa.data import build_loader
    from hjepa.masks import build_masker
    root = Path(a.jpeg_dir)
    gen_s = make_jpegs(root, a.jpegs, a.jpeg_px, log)
    b = R.get("throughput", {}).get("ijepa:best", min(a.batches))
    cores = os.cpu_count() or 1
    res = dict(n_jpegs=a.jpegs, jpeg_px=a.jpeg_px, generate_s=gen_s, batch=b, cpu_count=cores)
    free(a.device)
    v = build(a, "ijepa", b)
    pre = _med(time_steps(v, a.steps, a.warmup, a.device))  # batches already on the device

    def loader(workers):
        cfg = get_config(None, base=v.cfg.to_dict(), overrides=[
            "data.dataset=imagefolder", f"data.data_dir={root}", "data.n_val=0", f"data.num_workers={workers}",
            f"train.device={torch.device(a.device).type}"])
        t = time.time()
        ld = build_loader(cfg, "train", masker=build_masker(cfg))
        return ld, time.time() - t

    # the loader alone, few workers: images/s per worker (decode + crop + masks in the workers)
    w0 = max(1, min(4, cores - 1)) if not a.smoke else 1
    ld, scan_s = loader(w0)
    res["scan_s"] = scan_s
    it = iter(ld); next(it)
    n = min(len(ld) - 1, a.loader_batches)
    t = time.perf_counter()
    for _ in range(n): next(it)
    alone = n * b / (time.perf_counter() - t)
    del it, ld
    per_worker = alone / w0
    need = b / (pre / 1e3)  # images/s the GPU consumes at this batch
    res.update(alone_workers=w0, alone_images_per_s=alone, images_per_s_per_worker=per_worker,
               gpu_images_per_s=need, workers_needed=math.ceil(need / per_worker))
    # the loader feeding the trainer step
    wf = max(1, min(cores - 2, max(res["workers_needed"] + 1, w0))) if not a.smoke else 1
    ld, _ = loader(wf)
    it = iter(ld)
    v.trainer.optimizer_step([next(it)], 0); sync(a.device)
    waits, steps = [], []
    n = min(len(ld) - 2, a.loader_batches)
    t0 = time.perf_counter()
    for k in range(n):
        t = time.perf_counter(); batch = next(it); waits.append(time.perf_counter() - t)
        v.trainer.optimizer_step([batch], k + 1)
    sync(a.device)
    fed = (time.perf_counter() - t0) / n * 1e3
    del it, ld
    res.update(fed_workers=wf, step_ms_premade=pre, step_ms_fed=fed, stall_fraction=max(0.0, 1 - pre / fed),
               data_wait_ms=_med(waits) * 1e3, cores_needed=res["workers_needed"] + 1)
    log(f"  loader alone: {alone:.0f} img/s with {w0} workers ({per_worker:.0f}/worker); GPU takes {need:.0f} img/s "
        f"-> {res['workers_needed']} workers; fed with {wf}: {fed:.1f} ms/step vs {pre:.1f} premade "
        f"(stall {res['stall_fraction']:.1%}), scan {scan_s:.1f} s")
    return res


def section_layout(a, R, log):
    "channels_last input images against the default layout (ijepa, smallest batch)."
    free(a.device)
    v = build(a, "ijepa", min(a.batches))
    base = _med(time_steps(v, a.steps, a.warmup, a.device))
    v.batches = [(x.contiguous(memory_format=torch.channels_last), m) for x, m in v.batches]
    cl = _med(time_steps(v, a.steps, a.warmup, a.device))
    log(f"  channels_last input: {cl:.1f} ms vs {base:.1f} ms")
    return dict(default_ms=base, channels_last_ms=cl, speedup=base / cl)


# ----------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------
def targets(R) -> list:
    T = []

    def add(name, measured, op, thr, detail="", fmt="x", met=None):
        if met is None and measured is not None and op in (">=", "<=", "=="):
            met = measured >= thr if op == ">=" else measured <= thr if op == "<=" else measured == thr
        T.append(dict(target=name, measured=measured, op=op, threshold=thr, met=met, detail=detail, fmt=fmt))

    err, M = R.get("errors", {}), R["meta"]["model_name"]
    why = lambda s: err.get(s) or R.get("skipped", {}).get(s) or ""
    th = R.get("throughput", {})
    for p in PRESETS:
        best = th.get(f"{p}:best")
        r = th.get(f"{p}:b{best}") if best else None
        add(f"MFU {M} {p} bf16 (best batch {best})", r["mfu"] if r else None, ">=", 0.35,
            (f"{r['images_per_s']:.0f} img/s, {r['step_ms']:.1f} ms" + (", 2 levels" if p == "hjepa" else "")) if r else
            why("throughput") or "no batch ran", "%")
        for b in R["meta"]["batches"]:
            r = th.get(f"{p}:b{b}")
            ok = r and "error" not in r
            add(f"  {p} batch {b}: MFU", r["mfu"] if ok else None, "info", None,
                (f"{r['images_per_s']:.0f} img/s, {r['step_ms']:.1f} ms, peak mem "
                 + (f"{r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else "n/a")) if ok else
                (r or {}).get("error", why("throughput")), "%")
    bi = th.get("ijepa:best")
    ri, rh = th.get(f"ijepa:b{bi}"), th.get(f"hjepa:b{bi}")
    ok = ri and rh and "error" not in rh
    add(f"hjepa / ijepa step time (batch {bi})", rh["step_ms"] / ri["step_ms"] if ok else None, "<=", 1.15,
        "" if ok else why("throughput") or "not measured")
    of = R.get("official", {})
    o = of.get(f"b{of.get('batch')}") if "batch" in of else None
    ok = o and "error" not in o
    add(f"images/s ours / official I-JEPA (batch {of.get('batch')})", o["images_per_s_ratio"] if ok else None, ">=", 1.5,
        f"official {o['official_images_per_s']:.0f} img/s, ours {o['ours_images_per_s']:.0f}" if ok else
        (o or {}).get("error") or of.get("skipped") or why("official"))
    add("  achieved FLOP/s ours / official (equal work)", o["achieved_flops_ratio"] if ok else None, "info", None,
        f"MFU ours {o['ours_mfu']:.1%}, official {o['official_mfu']:.1%}" if ok else "")
    cp = R.get("compile", {})
    for n, label in (("regional_vitb16", "torch.compile regional (train.compile), ViT-B/16"),
                     ("whole_vitb16", "torch.compile whole model, ViT-B/16"),
                     ("cudagraphs_tiny", "torch.compile reduce-overhead (CUDA graphs), tiny")):
        r = cp.get(n)
        if r and r.get("ok"):
            add(label.replace("ViT-B/16", M) + ": works, loss = eager", r["loss_rel_diff"], "<=", 2e-2,
                f"x{r['speedup']:.2f} vs eager ({r['eager_ms']:.1f} -> {r['compiled_ms']:.1f} ms), compile {r['compile_s']:.0f} s", "e")
        else:
            add(label.replace("ViT-B/16", M) + ": works, loss = eager", None, "<=", 2e-2,
                (r or {}).get("error") or cp.get("skipped") or why("compile") or "not run", "e",
                met=False if r and not r.get("ok") else None)
        s = cp.get("regional_static_vitb16")
        if n == "regional_vitb16" and s:  # tried only when dynamic=True failed
            add("  the same with dynamic=False (a graph per token count)", s.get("loss_rel_diff") if s.get("ok") else None,
                "info", None, f"works, x{s['speedup']:.2f} vs eager, compile {s['compile_s']:.0f} s" if s.get("ok") else
                s.get("error"), "e")
    r = cp.get("cudagraphs_tiny") or {}
    busy = r.get("compiled_gpu_busy_fraction")
    add("tiny step not launch-bound: GPU busy / step (CUDA graphs)", busy, ">=", 0.5,
        (f"eager {r.get('eager_gpu_busy_fraction') or float('nan'):.0%} busy at {r['eager_ms']:.1f} ms/step, "
         f"CUDA graphs {r['compiled_ms']:.1f} ms/step") if busy is not None else
        r.get("compiled_gpu_busy_error") or "needs the CUDA-graphs probe on CUDA", "%")
    kn = R.get("kernels", {})
    for p in PRESETS:
        r = kn.get(p)
        add(f"SDPA kernel that ran ({p})", None, "info", None, r["default"] if r else why("kernels"))
        for be in ("flash", "efficient"):
            x = r and r.get(be)
            add(f"  SDPA {be} usable under sdpa_kernel ({p})", float(x["ok"]) if x else None, "==", 1.0,
                (f"ran {x['ran']}, {x['step_ms']:.1f} ms (x{x['vs_default']:.2f} of default)" if x["ok"] else x["error"]) if x else
                why("kernels"), "bool")
    fa = kn.get("flash_attn")
    add("flash-attn package step", float(fa["ok"]) if fa else None, "==", 1.0,
        (f"ran {fa['ran']}, {fa['step_ms']:.1f} ms" if fa["ok"] else fa["error"]) if fa else
        ("flash_attn not installed (optional 'cuda' extra)" if kn else why("kernels")), "bool")
    ld = R.get("loader", {})
    ok = "stall_fraction" in ld
    add(f"GPU idle from the JPEG loader ({ld.get('fed_workers')} workers)", ld["stall_fraction"] if ok else None, "<=", 0.10,
        f"{ld['step_ms_fed']:.1f} ms/step fed vs {ld['step_ms_premade']:.1f} premade, wait {ld['data_wait_ms']:.1f} ms" if ok
        else why("loader"), "%")
    add("  CPU cores the loader needs", ld["cores_needed"] if ok else None, "info", None,
        f"{ld['gpu_images_per_s']:.0f} img/s at {ld['images_per_s_per_worker']:.0f} img/s per worker, +1 main; "
        f"machine has {ld['cpu_count']}" if ok else "", "n")
    sy = R.get("syncs", {})
    add("fused AdamW", float(sy["fused_adamw"]) if "fused_adamw" in sy else None, "==", 1.0, why("syncs"), "bool")
    ok = "unlogged" in sy
    add("host syncs in the step outside the trainer's logged reads", sy["unlogged"] if ok else None, "<=", 0,
        f"{sy['total']} in all, {sy['logged']} in hjepa/train.py" if ok else sy.get("note") or why("syncs"), "n")
    lay = R.get("layout")
    add("  channels_last input speed-up", lay["speedup"] if lay else None, "info", None, why("layout"))
    return T


def fmt_row(t):
    m, f = t["measured"], t["fmt"]
    ms = ("n/a" if m is None else
          f"{m:.1%}" if f == "%" else f"{m:.1e}" if f == "e" else ("yes" if m else "no") if f == "bool" else
          f"{m:g}" if f == "n" else f"{m:.2f}x")
    if t["op"] == "info": return ms, "-", "info"
    thr = t["threshold"]
    goal = (f"{t['op']} {thr:.0%}" if f == "%" else f"{t['op']} {thr:.0e}" if f == "e" else "yes" if f == "bool" else
            f"{t['op']} {thr:g}" if f == "n" else f"{t['op']} {thr}x")
    return ms, goal, "n/a" if t["met"] is None else "met" if t["met"] else "NOT met"


def print_table(T, log=print):
    log(f"\n{'target':68s} {'measured':>9s} {'goal':>9s}  status")
    for t in T:
        m, g, s = fmt_row(t)
        log(f"{t['target']:68s} {m:>9s} {g:>9s}  {s}" + (f"  ({t['detail']})" if t["detail"] else ""))


# ----------------------------------------------------------------------------------------------------------
def run(a, log=print) -> dict:
    t_start = time.time()
    budget_end = t_start + a.budget_s
    dev = a.device
    R = dict(meta=dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                       cuda=torch.version.cuda, device=torch.cuda.get_device_name() if cuda(dev) else "cpu",
                       cpu_count=os.cpu_count(), python=platform.python_version(), quick=a.quick, smoke=a.smoke,
                       steps=a.steps, warmup=a.warmup, batches=a.batches, model=a.model,
                       model_name="smoke model" if a.smoke else "ViT-B/16"),
             errors={}, skipped={}, section_s={})
    if cuda(dev):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    R["peak_flops"], R["meta"]["peak_source"] = peak_flops(dev, log)
    log(f"device {R['meta']['device']}, torch {torch.__version__}; peak: {R['meta']['peak_source']}")

    def section(name, fn, *args):
        if name in a.skip: R["skipped"][name] = "skipped by --skip"; return
        if time.time() > budget_end: R["skipped"][name] = f"time budget of {a.budget_s} s spent"; return
        log(f"[{name}] ({time.time() - t_start:.0f} s)")
        t = time.time()
        try:
            R[name] = fn(a, R, log, *args)
        except Exception as e:
            R["errors"][name] = "not met: " + _err(e)
            log(f"section {name} failed: {_err(e)}")
            if a.verbose: traceback.print_exc()
        R["section_s"][name] = time.time() - t
        free(dev)

    section("throughput", section_throughput)
    section("kernels", section_kernels)
    section("syncs", section_syncs)
    section("official", section_official)
    section("layout", section_layout)
    section("loader", section_loader)
    section("compile", section_compile, budget_end)
    R["meta"]["total_s"] = time.time() - t_start
    R["targets"] = targets(R)
    print_table(R["targets"], log)
    return R


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="hjepa GPU benchmark (issue 32)")
    ap.add_argument("--out", default="/tmp/bench_gpu.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="batches 64,128; no whole-model compile; 5k JPEGs (~3-4 min)")
    ap.add_argument("--tiny", dest="smoke", action="store_true", help="smoke sizes (a 2-block width-64 model, batches 4,8) for the CPU test")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,128,256)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--ijepa-src", default=None, help="official I-JEPA checkout (holds src/); default $IJEPA_SRC")
    ap.add_argument("--jpegs", type=int, default=None)
    ap.add_argument("--jpeg-px", type=int, default=256)
    ap.add_argument("--jpeg-dir", default=None)
    ap.add_argument("--loader-batches", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="run the compile probes off CUDA too")
    ap.add_argument("--compile-timeout", type=int, default=240, help="seconds per compile probe")
    ap.add_argument("--budget-s", type=int, default=None, help="sections after this many seconds are skipped (n/a)")
    ap.add_argument("--skip", default="", help="comma-separated: throughput,kernels,syncs,official,layout,loader,compile")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.model = SMOKE if a.smoke else VITB16
    a.tiny_model = SMOKE if a.smoke else []  # the CUDA-graphs probe: the 'tiny' preset's own model (32 px, width 192)
    a.batches = [int(x) for x in a.batches.split(",")] if a.batches else [4, 8] if a.smoke else [64, 128] if a.quick else [64, 128, 256]
    a.steps = a.steps or (2 if a.smoke else 6 if a.quick else 10)
    a.warmup = a.warmup or (1 if a.smoke else 2 if a.quick else 3)
    a.jpegs = a.jpegs or (48 if a.smoke else 5000 if a.quick else 20000)
    a.jpeg_px = 40 if a.smoke else a.jpeg_px
    a.jpeg_dir = a.jpeg_dir or f"/tmp/hjepa-jpegs-{a.jpegs}-{a.jpeg_px}"
    a.loader_batches = a.loader_batches or (3 if a.smoke else 15 if a.quick else 30)
    a.budget_s = a.budget_s or (60 if a.smoke else 200 if a.quick else 460)
    a.skip = {s for s in a.skip.split(",") if s}
    a.ijepa_src = a.ijepa_src or os.environ.get("IJEPA_SRC") or (str(ROOT / ".ijepa_src") if (ROOT / ".ijepa_src").is_dir() else None)
    return a


def main(argv=None):
    a = parse_args(argv)
    if a._probe:
        try:
            r = probe_compile(a, a._probe)
        except Exception as e:  # the error's first line for the table, the traceback's end for the JSON
            r = dict(ok=False, error=_err(e), traceback=traceback.format_exc().splitlines()[-30:])
        print(json.dumps(r, default=str))
        return 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        R = run(a)
    B.write_json(R, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
