"""Every chapter notebook's cells are its tests: execute each one (skipping cells flagged in tst_flags)."""
import os
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [ROOT / "nbs" / "index.ipynb"] + sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
SKIP_FLAGS = {"slow", "gpu"} - set(os.environ.get("HJEPA_TEST_FLAGS", "").split())


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb):
    ok, secs = run_notebook(nb, skip_flags=sorted(SKIP_FLAGS), basepath=ROOT)
    assert ok, f"{nb.name} failed; its traceback is in the captured stderr above"
