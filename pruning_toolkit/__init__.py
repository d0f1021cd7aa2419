"""The pruning toolkit's code; the root modules (``pruning_algorithms``, ``msd``, ...) name its
public surface with the reference projects' names, and this package never imports them.

Exported here, for LEAN on your own CNN: ``shrink`` and ``ShrinkReport`` (``shrinking``),
``LayerRule`` and ``register_layer_rule`` (``layer_rules``), ``Selection``, ``LeanChains`` and
``NormThreshold`` (``selection``), ``CriterionSelection`` (``cnn_criteria``), ``prune_step``
(``pruning_step``). Imported on first use, so
that the toy experiment does not load the LEAN half.
"""
import importlib

_EXPORTS = {
    "shrink": "shrinking", "ShrinkReport": "shrinking",
    "LayerRule": "layer_rules", "register_layer_rule": "layer_rules",
    "Selection": "selection", "LeanChains": "selection", "NormThreshold": "selection",
    "CriterionSelection": "cnn_criteria",
    "prune_step": "pruning_step",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
