"""The LEAN example experiments (Circle-Square data, MS-D training, pruning runs, plots); the
scripts in ``examples/`` and the console scripts only call their ``main``.

Imports only the package's own modules, never the root modules (``msd``, ``pruning_algorithms``,
...) nor a script of ``examples/``.
"""
from pathlib import Path

# default data, model and results folders of the experiments: examples/ of the checkout
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
