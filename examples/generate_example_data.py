"""Generate the Circle-Square (CS) segmentation data of the LEAN example experiment.

    python examples/generate_example_data.py [--out DIR]

The code and all its options: ``pruning_toolkit/experiments/cs_data.py`` (``--help``);
``pip install -e .`` also installs it as the command ``lean-generate-cs-data``.
"""
import sys

from pruning_toolkit.experiments.cs_data import main

if __name__ == "__main__":
    sys.exit(main())
