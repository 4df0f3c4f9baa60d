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


ALL_NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if not {".ipynb_checkpoints", "_proc"} & set(p.parts))


@pytest.mark.parametrize("nb", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "nbs")))
def test_notebook_declares_kernel(nb):
    # papermill and the docs build start the kernel the notebook names; a notebook rewritten by a tool such as
    # jupytext can lose that metadata and then fails only when it is executed
    import json
    ks = json.loads(nb.read_text())["metadata"].get("kernelspec", {})
    assert ks.get("name") == "python3" and ks.get("language") == "python", f"{nb.name}: kernelspec {ks!r}"
