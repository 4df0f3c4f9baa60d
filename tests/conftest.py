import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT

# image verdicts (hjepa.data.check_images) are cached per user; the tests keep theirs apart
os.environ.setdefault("HJEPA_CACHE_DIR", str(Path(__import__("tempfile").mkdtemp(prefix="hjepa-test-cache-"))))
