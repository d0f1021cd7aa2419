"""The compiled (numba) engine of LEAN's chain extraction (the code lives in ``pruning_toolkit.chains_numba``)."""
from pruning_toolkit.chains_numba import NumbaChainFinder

__all__ = ["NumbaChainFinder"]
