"""Table and plot of a pruning experiment's results.csv.

    python examples/plot_results.py examples/results/results.csv

The code and all its options: ``pruning_toolkit/experiments/results.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-plot-results``.
"""
import sys

from pruning_toolkit.experiments.results import main

if __name__ == "__main__":
    sys.exit(main())
