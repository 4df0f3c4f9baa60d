"Helpers shared by the test modules (pytest puts this folder on sys.path)."
from hjepa.config import get_config


def micro(out_dir, *overrides):
    "The `micro` preset on 64 train / 16 val images in batches of 8, writing to `out_dir`, quiet, one thread."
    return get_config("micro", [f"train.out_dir={out_dir}", "train.progress=false", "train.threads=1",
                                "data.n_train=64", "data.n_val=16", "data.batch_size=8", *overrides])
