"""Layer-wise relevance propagation (LRP) rules as small composable objects.

Rules for ``nn.Linear`` and ``nn.Conv2d``: :class:`ZRule`, :class:`EpsilonRule`,
:class:`ZPlusRule`, :class:`AlphaBetaRule`. Pooling: :class:`ProportionalRule` (sum and
average pooling) and :class:`WinnerTakesAllRule` (max pooling). Element-wise layers:
:class:`PassRule`. :func:`propagate` runs a whole ``nn.Sequential`` with a rule per layer type.

The public surface of ``pruning_toolkit.lrp``.
"""
from pruning_toolkit.lrp import (DEFAULT_RULES, AlphaBetaRule, EpsilonRule, PassRule, ProportionalRule,
                                 WinnerTakesAllRule, ZPlusRule, ZRule, propagate, rule_for)

__all__ = [
    "AlphaBetaRule", "EpsilonRule", "PassRule", "ProportionalRule", "WinnerTakesAllRule", "ZPlusRule", "ZRule",
    "DEFAULT_RULES", "propagate", "rule_for",
]
