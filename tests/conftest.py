"""Make the repository root and the examples importable when the tests run without ``pip install -e .``."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "examples"):   # the example scripts import their shared modules by name
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small convolutions are slower on two), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
