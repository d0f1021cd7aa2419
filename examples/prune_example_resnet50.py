"""Prune an FCN-ResNet50 on the Circle-Square data with LEAN, IndivL1 and IndivSV.

    python examples/prune_example_resnet50.py --quick

The code and all its options: ``pruning_toolkit/experiments/resnet_pruning.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-prune-resnet50``.
"""
import sys

from pruning_toolkit.experiments.resnet_pruning import report_errors

if __name__ == "__main__":
    sys.exit(report_errors())
