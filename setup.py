"""Install the pruning toolkit: ``pip install -e .`` (add ``[test]`` for the test tools)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
ROOT_MODULES = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "setup")

setup(
    name="pruning-toolkit",
    version="0.1.0",
    description="Pruning by Explaining (LRP toy experiment) and LEAN (longest-chain CNN pruning) in one toolkit",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    py_modules=ROOT_MODULES,
    packages=find_packages(include=["pruning_toolkit", "pruning_toolkit.*"]),
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
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    license="BSD-3-Clause",
)
