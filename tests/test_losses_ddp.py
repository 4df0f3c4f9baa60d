"""SIGReg under torch.distributed: two gloo processes, each holding half the batch, reproduce the global statistic.

Each rank's gradient is world_size x its share of the global gradient (the all-reduce's backward sums the
identical upstream gradients of all ranks); DDP's averaging over ranks then gives exactly the global gradient.
"""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hjepa.losses import sigreg_loss

WORLD = 2


def _rank(rank: int, init_file: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        full = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5 + 0.2
        full.requires_grad_()
        ref = sigreg_loss(full, step=11, slices=24, distributed=False)  # one process, whole batch
        ref.backward()
        # unequal local batch sizes: rank 0 holds 25 samples, rank 1 holds 15 (N is all-reduced)
        lo, hi = (0, 25) if rank == 0 else (25, 40)
        local = full.detach()[:, lo:hi].clone().requires_grad_()
        loss = sigreg_loss(local, step=11, slices=24)  # auto-detects the process group
        loss.backward()
        torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-10, atol=0)
        torch.testing.assert_close(local.grad / WORLD, full.grad[:, lo:hi], rtol=1e-9, atol=1e-12)
    finally:
        dist.destroy_process_group()


def test_sigreg_all_reduce_matches_global_batch():
    with tempfile.TemporaryDirectory() as d:
        init_file = os.path.join(d, "pg")
        # fork: the children inherit the imported torch, so the test takes seconds, not tens of seconds
        mp.start_processes(_rank, args=(init_file,), nprocs=WORLD, join=True, start_method="fork")
