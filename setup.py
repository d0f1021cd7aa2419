"""Install the pruning toolkit: ``pip install -e .`` (add ``[test]`` for the test tools)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
# the reference's module names (msd, pruning_algorithms, ...); main.py and setup.py are scripts
ROOT_MODULES = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("main", "setup"))
COMMANDS = {
    "pruning-by-explaining": "pruning_toolkit.toy_cli:main",        # = python main.py
    "toy-train": "pruning_toolkit.toy_model:main",
    "lean-generate-cs-data": "pruning_toolkit.experiments.cs_data:main",  # = python examples/<script>.py
    "lean-train-msd": "pruning_toolkit.experiments.msd_training:report_errors",
    "lean-prune-msd": "pruning_toolkit.experiments.msd_pruning:report_errors",
    "lean-prune-resnet50": "pruning_toolkit.experiments.resnet_pruning:report_errors",
    "lean-plot-results": "pruning_toolkit.experiments.results:main",
    "lean-few-samples": "pruning_toolkit.experiments.few_samples:report_errors",
}

setup(
    name="pruning-toolkit",
    version="0.1.0",
    description="Pruning by Explaining (LRP toy experiment) and LEAN (longest-chain CNN pruning) in one toolkit",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    py_modules=ROOT_MODULES,
    packages=find_packages(include=["pruning_toolkit", "pruning_toolkit.*"]),
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in COMMANDS.items()]},
    install_requires=[
        "numpy",
        "scipy",
        "torch>=2.1",
        "matplotlib",
        "scikit-learn",
        "networkx",
        "tifffile",
        "tqdm",
        "prettytable",
        # compiled LEAN chain extraction (graph_engines_numba): FCN-ResNet50 in seconds, not minutes
        "numba",
        # --launcher local|slurm: grids and pruning runs as jobs (pure Python, ~0.8 MB with cloudpickle)
        "submitit",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    license="BSD-3-Clause",
)
