"""Pruning by Explaining's few-samples scenario: one-shot pruning without fine-tuning against the
number of reference images, every criterion, on the CS networks.

    python examples/prune_few_samples.py --model examples/trained_models/msd_network_d=50_epochs=50.torch

The code and all its options: ``pruning_toolkit/experiments/few_samples.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-few-samples``.
"""
import sys

from pruning_toolkit.experiments.few_samples import report_errors

if __name__ == "__main__":
    sys.exit(report_errors())
