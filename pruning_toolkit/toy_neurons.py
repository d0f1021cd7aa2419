"""Hidden neurons of the toy MLP: ranked across layers by their normalised scores, and removed
physically (the pruned model is smaller, not masked)."""
import copy
import warnings

import numpy as np
import torch
from torch import nn

from pruning_toolkit.toy_model import hidden_layer_indices, hidden_widths
from pruning_toolkit.toy_vocabulary import PRUNED_NEURONS


def rank_neurons(normalised_scores):
    """Indices of all hidden neurons (numbered layer by layer) from lowest to highest score.

    A stable sort, so ties are broken by (score, layer, index).
    """
    flat = torch.cat([s.detach().reshape(-1) for s in normalised_scores]).cpu().numpy()
    return np.argsort(flat, kind="stable")


def kept_neurons(order, layer_sizes, count):
    """Per layer, the sorted indices of the neurons that survive removing the first ``count`` of ``order``."""
    total = sum(layer_sizes)
    if not 0 <= count <= total:
        raise ValueError(f"cannot remove {count} of {total} neurons")
    keep = np.ones(total, dtype=bool)
    keep[np.asarray(order[:count], dtype=np.int64)] = False
    offsets = np.cumsum([0] + list(layer_sizes))
    return [np.flatnonzero(keep[start:stop]) for start, stop in zip(offsets[:-1], offsets[1:])]


def _sliced_linear(linear, rows, columns):
    """A new Linear holding ``linear``'s weight rows ``rows`` and columns ``columns`` (``None``: all)."""
    weight = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    if rows is not None:
        rows = torch.as_tensor(rows, dtype=torch.long, device=weight.device)
        weight = weight.index_select(0, rows)
        bias = None if bias is None else bias.index_select(0, rows)
    if columns is not None:
        weight = weight.index_select(1, torch.as_tensor(columns, dtype=torch.long, device=weight.device))
    with warnings.catch_warnings():  # a layer whose neurons are all removed has zero-element weights
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        sliced = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None,
                                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        sliced.weight.copy_(weight)
        if bias is not None:
            sliced.bias.copy_(bias)
    return sliced


def remove_neurons(model, kept):
    """A physically smaller copy of ``model`` holding only the ``kept`` neurons of each hidden Linear layer.

    Removing neuron i of hidden layer l deletes row i of W_l, entry i of b_l and column i of
    the next Linear layer's weight. ``model`` is left unchanged.
    """
    hidden = hidden_layer_indices(model)
    if len(kept) != len(hidden):
        raise ValueError(f"expected kept neurons for {len(hidden)} hidden layers, got {len(kept)}")
    rows_of = dict(zip(hidden, kept))
    layers, previous_rows = [], None
    for index, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            rows = rows_of.get(index)
            layers.append(_sliced_linear(layer, rows, previous_rows))
            previous_rows = rows
        else:
            layers.append(copy.deepcopy(layer))
    return nn.Sequential(*layers).train(model.training)


def prune(model, order, count=PRUNED_NEURONS):
    """Remove the first ``count`` neurons of ``order`` (from :func:`rank_neurons`) from ``model``."""
    return remove_neurons(model, kept_neurons(order, hidden_widths(model), count))
