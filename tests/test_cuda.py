"""CUDA paths of the trainer and the evaluation: precisions, GPU checkpoints read on the CPU, exact resume, evaluation,
the compiled step, fused AdamW and the attention kernels that actually run (checked, not assumed).

CI has no GPU, so every test here is skipped there. On a CUDA machine: `pytest tests/test_cuda.py`.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hjepa import runs as R  # noqa: E402
from hjepa import train as T  # noqa: E402
from _helpers import micro  # noqa: E402
from hjepa.config import get_config  # noqa: E402
from hjepa.eval import evaluate  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cfg(out, *ov):
    return micro(out, "train.device=cuda", "train.log_every=1", *ov)


def test_precisions_train_and_agree(tmp_path):
    first = {}
    for p in ("fp32", "bf16", "fp16"):
        run = T.train(cfg(tmp_path / p, f"train.precision={p}", "train.max_steps=8"))
        env = json.loads((run / "env.json").read_text())
        assert env["device"]["type"] == "cuda" and env["device"]["name"], env["device"]
        losses = [r["loss"] for r in R.read_metrics(run, "train")]
        assert len(losses) == 8 and all(math.isfinite(x) for x in losses), (p, losses)
        first[p] = losses[0]
        ck = R.read_checkpoint(run / "checkpoints" / "final.pt")  # written from the GPU, read on the CPU
        assert all(v.device.type == "cpu" for v in ck["model"].values())
    for p in ("bf16", "fp16"):  # same init, data and masks: the first loss differs only by rounding
        assert abs(first[p] - first["fp32"]) < 0.05 * abs(first["fp32"]), first


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    ov = ["train.max_steps=6", "train.ckpt_every=3", "train.keep_last=3", "train.precision=bf16"]
    ref = T.train(cfg(tmp_path / "ref", *ov))
    run = tmp_path / "run"
    shutil.copytree(ref, run)  # the same run, cut back to its step-3 checkpoint
    (run / "checkpoints" / "final.pt").unlink()
    for p in R.list_checkpoints(run / "checkpoints"):
        if p.name != "step_00000003.pt": p.unlink()
    T.train(cfg(run, *ov, "train.resume=auto"))
    assert [r["step"] for r in R.read_metrics(run, "train")] == [1, 2, 3, 4, 5, 6]
    a, b = (R.read_checkpoint(r / "checkpoints" / "final.pt")["model"] for r in (ref, run))
    for k in a:  # CUDA kernels (atomics in backward) need not be bit-reproducible: equal up to rounding
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-2, msg=k)


def test_evaluate_on_cuda_matches_cpu(tmp_path):
    run = T.train(cfg(tmp_path / "r", "train.max_steps=2"))
    ck = run / "checkpoints" / "final.pt"
    g, c = (evaluate(ck, device=d, overrides=["eval.cache=false"]) for d in ("cuda", "cpu"))
    n = get_config("micro").data.n_test
    for k in ("knn_top1", "probe_test"):  # features differ by float rounding only: at most one test image flips
        assert abs(g[k] - c[k]) <= 1 / n + 1e-9, (k, g[k], c[k])
    assert abs(g["random_init"]["knn_top1"] - c["random_init"]["knn_top1"]) <= 1 / n + 1e-9


def test_compiled_step_matches_eager(tmp_path):
    "train.compile=true (every block compiled) trains the same run as eager, up to bf16 rounding."
    ov = ["train.precision=bf16", "train.max_steps=4"]
    runs = {c: T.train(cfg(tmp_path / c, *ov, f"train.compile={c}")) for c in ("false", "true")}
    le, lc = ([r["loss"] for r in R.read_metrics(runs[c], "train")] for c in ("false", "true"))
    assert len(lc) == 4 and all(math.isfinite(x) for x in lc), lc
    for a, b in zip(le, lc): assert abs(a - b) <= 2e-2 * abs(a), (le, lc)


def test_cuda_optimizer_is_fused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).cuda()
    assert T.build_optimizer(model, cfg(tmp_path)).defaults["fused"] is True


def _sdpa(name):
    from torch.nn.attention import SDPBackend
    return dict(flash=SDPBackend.FLASH_ATTENTION, efficient=SDPBackend.EFFICIENT_ATTENTION)[name]


@pytest.mark.parametrize("q_from", [0, 150])  # all queries (encoders), a query subset (the predictor's last block)
@pytest.mark.parametrize("backend", ["flash", "efficient"])
def test_sdpa_fused_kernels_run_vit_b16_attention(backend, q_from):
    "SDPA's flash and memory-efficient kernels run ViT-B/16 attention (196 tokens, 12 heads of 64) in bf16, forward and backward; the benchmark's kernel record names the kernel that ran."
    from torch.nn.attention import sdpa_kernel
    import bench_gpu
    from hjepa.models import Block
    torch.manual_seed(0)
    blk = Block(768, 12).cuda()
    blk.attn.backend = "sdpa"
    x = torch.randn(4, 196, 768, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([_sdpa(backend)]), bench_gpu.Ops() as rec:
        y = blk(x, q_from=q_from)
        y.float().square().mean().backward()
    assert bench_gpu.kernel_name(rec.ops) == backend, rec.ops
    assert any(o.endswith("backward") for o in rec.ops), rec.ops
    with torch.autocast("cuda", dtype=torch.bfloat16):  # the same function as the reference math path
        with sdpa_kernel([_sdpa(backend)]): y1 = blk(x, q_from=q_from)
        from torch.nn.attention import SDPBackend
        with sdpa_kernel([SDPBackend.MATH]): y0 = blk(x, q_from=q_from)
    assert ((y1.float() - y0.float()).norm() / y0.float().norm()) < 1e-2


def test_padded_context_attention_runs_memory_efficient_kernel():
    "A key-padding mask (variable-length contexts) rules out flash; the memory-efficient kernel takes it."
    from torch.nn.attention import sdpa_kernel
    import bench_gpu
    from hjepa.models import Block
    blk = Block(768, 12).cuda()
    blk.attn.backend = "sdpa"
    x = torch.randn(4, 100, 768, device="cuda", requires_grad=True)
    valid = torch.ones(4, 100, dtype=torch.bool, device="cuda"); valid[:, 90:] = False
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([_sdpa("efficient")]), bench_gpu.Ops() as rec:
        blk(x, attn_mask=valid[:, None, None, :]).float().sum().backward()
    assert bench_gpu.kernel_name(rec.ops) == "efficient", rec.ops


def test_model_step_runs_a_fused_sdpa_kernel(tmp_path):
    "The trainer's bf16 step on CUDA dispatches a fused SDPA kernel (what bench_gpu reports), not the math fallback."
    import bench, bench_gpu
    v = bench.OursVariant("micro", "bf16", overrides=["model.embed_dim=128", "model.num_heads=2", "model.pred_heads=2",
                                                      "model.attn_backend=sdpa", "data.image_size=32"], device="cuda")
    v.step(0)
    with bench_gpu.Ops() as rec: v.step(1)
    assert bench_gpu.kernel_name(rec.ops) in ("flash", "efficient", "cudnn"), rec.ops
