"""Train an MS-D segmentation network on the Circle-Square data.

    python examples/train_example_msd.py --epochs 50

The code and all its options: ``pruning_toolkit/experiments/msd_training.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-train-msd``.
"""
import sys

from pruning_toolkit.accuracy import get_global_accuracy
from pruning_toolkit.experiments.msd_training import report_errors

__all__ = ["get_global_accuracy"]  # reference scripts: from train_example_msd import get_global_accuracy

if __name__ == "__main__":
    sys.exit(report_errors())
