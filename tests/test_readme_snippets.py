"""Every ```python snippet of the README runs as written, from a checkout's root (each in a fresh
process, in a copy of the paths it reads: the shipped MS-D network and a small CS data set)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def checkout_like(tmp_path_factory):
    """A working folder that holds what the snippets read, as a fresh checkout would after
    ``python examples/generate_example_data.py`` (fewer, smaller images, for speed)."""
    from pruning_toolkit.experiments import cs_data as generate_example_data
    folder = tmp_path_factory.mktemp("checkout")
    generate_example_data.generate_example_data(folder / "examples" / "data", {"train": 10, "val": 2, "test": 2}, 64)
    (folder / "examples" / "trained_models").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "trained_models" / "msd_network_d=50.torch", folder / "examples" / "trained_models")
    return folder


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, checkout_like):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=checkout_like, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"snippet {index}:\n{SNIPPETS[index]}\n{done.stderr[-2000:]}"
