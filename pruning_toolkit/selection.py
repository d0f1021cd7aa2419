"""What one pruning step removes: the selection contract and the two selections of the papers.

A selection is an object with ``select(graph, remove_fraction)`` that returns, for every layer
of the channel graph, an (out, in) bool array of the convolutions to prune now, about a fraction
``remove_fraction`` of those still alive. :func:`pruning_step.prune_step` calls it after the
redundancy pass, so it sees the current masks. A new criterion is one more subclass.
"""
from dataclasses import dataclass

import numpy as np

from pruning_toolkit.chains import longest_path_prune_edges
from pruning_toolkit.operator_norms import LAYER_NORMS, layer_norms

MSD_FOURIER_SIZE = 64
RESNET_FOURIER_SIZE = 7


class Selection:
    """The contract: which convolutions of ``graph`` to prune now."""

    def select(self, graph, remove_fraction):
        raise NotImplementedError


@dataclass(frozen=True)
class NormThreshold(Selection):
    """IndivSV / IndivL1: prune the convolutions whose norm lies below one global percentile
    (``inclusive``: at or below it, as the reference's ResNet50 variant)."""

    norm: str = "sv"
    fourier_size: int = MSD_FOURIER_SIZE
    inclusive: bool = False

    def __post_init__(self):
        if self.norm not in LAYER_NORMS:
            raise ValueError(f"unknown norm {self.norm!r}, expected one of {sorted(LAYER_NORMS)}")

    def select(self, graph, remove_fraction):
        norms = layer_norms(graph, self.norm, self.fourier_size)
        return threshold_selection(remove_fraction, norms, self.inclusive)


@dataclass(frozen=True)
class LeanChains(Selection):
    """LEAN: keep the longest multiplicative chains of the spectral-norm graph, prune the rest."""

    fourier_size: int = MSD_FOURIER_SIZE
    verbose: bool = False

    def select(self, graph, remove_fraction):
        norms = layer_norms(graph, "sv", self.fourier_size)
        if self.verbose:   # LEAN's chains need products >= 1: how many convolutions can start one
            at_least_one = sum(int((values >= 1).sum()) for values in norms)
            print(f"LEAN: {at_least_one} of {sum(int((values > 0).sum()) for values in norms)} remaining "
                  f"convolutions have a spectral norm >= 1")
        return lean_selection(graph, remove_fraction, norms)


def lean_selection(graph, remove_fraction, norms):
    """Which convolutions LEAN prunes now: all but the longest chains of the norm graph."""
    sources, targets, weights, flat_indices = [], [], [], []
    for layer, values in zip(graph.layers, norms):
        flat_index = np.flatnonzero(values)  # one pass over the norms; reused for the selections
        out_index, in_index = np.divmod(flat_index, values.shape[1])
        # matrix orientation of the spec: entry [out, in] is read as an edge out -> in
        sources.append(layer.out_nodes[out_index])
        targets.append(layer.in_nodes[in_index])
        weights.append(values.ravel()[flat_index])
        flat_indices.append(flat_index)
    num_skips = len(graph.skip_edges)
    sources.append(graph.skip_edges[:, 0])
    targets.append(graph.skip_edges[:, 1])
    weights.append(np.ones(num_skips))
    num_conv_edges = sum(len(w) for w in weights) - num_skips
    is_skip = np.concatenate([np.zeros(num_conv_edges, bool), np.ones(num_skips, bool)])
    to_prune = longest_path_prune_edges(
        graph.num_nodes, np.concatenate(sources), np.concatenate(targets), np.concatenate(weights),
        remove_fraction, skip=is_skip)
    selections, start = [], 0
    for values, flat_index in zip(norms, flat_indices):
        selection = np.zeros(values.size, dtype=bool)
        selection[flat_index] = to_prune[start:start + flat_index.size]
        selections.append(selection.reshape(values.shape))
        start += flat_index.size
    return selections


def threshold_selection(remove_fraction, norms, inclusive=False):
    """Global threshold: numpy's linear percentile at ``100 * remove_fraction`` of the nonzero norms."""
    all_norms = np.concatenate([values.ravel() for values in norms])
    if not (all_norms > 0).any():
        raise ValueError("every remaining convolution has norm 0 (all-zero weights): nothing to rank")
    threshold = np.percentile(all_norms[all_norms > 0], 100 * remove_fraction)
    if inclusive:
        return [values <= threshold for values in norms]
    return [values < threshold for values in norms]
