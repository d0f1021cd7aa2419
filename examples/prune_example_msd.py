"""Prune a trained MS-D network on the Circle-Square data with LEAN, IndivL1 and IndivSV.

    python examples/prune_example_msd.py --method all

The code and all its options: ``pruning_toolkit/experiments/msd_pruning.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-prune-msd``.
"""
import sys

from pruning_toolkit.experiments.msd_pruning import report_errors

if __name__ == "__main__":
    sys.exit(report_errors())
