"""The four "Pruning by Explaining" criteria (lrp, taylor, grad, weight) on any CNN with a
channel graph, at two granularities, as a :class:`selection.Selection`.

- ``"filter"``: one score per output channel of a layer (the paper's unit; removing filters
  removes whole channels, which ``shrink`` turns into speed);
- ``"kernel"``: one score per convolution ``W[o, i]`` (LEAN's unit).

Scores are computed on reference samples (images and class indices, per pixel for
segmentation) as the toy spec does per neuron, the "activation" of a filter being the layer's
output before its nonlinearity (after its BatchNorm, if any), L the mean cross-entropy:
- lrp: relevance at the filter's output (kernel: the relevance that flows through the kernel),
  summed over samples and positions (``cnn_lrp``);
- taylor: ``sum(a * dL/da) / n`` (kernel: ``sum(W * dL/dW) / n`` over its taps);
- grad: ``sum(dL/da) / n`` (kernel: ``sum(dL/dW) / n``);
- weight: ``sum |W| / n`` over the filter's (kernel's) weights.
Filter taylor and grad come from parameter gradients: ``sum(a * dL/da)`` is the sum of
``theta * dL/dtheta`` over the parameters of the channel (its kernels and bias, or its
BatchNorm's weight and bias), ``sum(dL/da)`` the gradient of its bias (or BatchNorm bias).
Each layer's scores are normalised as in the toy spec (``normalisation``), then all layers are
ranked together and the lowest go, ties broken by (score, layer, index).
"""
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pruning_toolkit import cnn_lrp, runtime
from pruning_toolkit.masks import kernel_alive, masked_weight
from pruning_toolkit.normalisation import NORMALISATIONS, by_absolute_sum
from pruning_toolkit.selection import Selection

CRITERIA = tuple(NORMALISATIONS)
GRANULARITIES = ("filter", "kernel")


def reference_batches(reference):
    """The (inputs, targets) batches of ``reference``: one (inputs, targets) pair, or an iterable of them."""
    if isinstance(reference, (tuple, list)) and len(reference) == 2 and isinstance(reference[0], torch.Tensor):
        return [tuple(reference)]
    batches = list(reference)
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise ValueError("reference samples must be (inputs, targets) or an iterable of (inputs, targets) batches")
    return batches


def _trainable(module, name):
    """The parameter behind ``module.<name>`` (``<name>_orig`` once pruned)."""
    original = module._parameters.get(name + "_orig")
    return module._parameters[name] if original is None else original


def _channel_parameters(layer):
    """(module, name, entries) of the parameters that shift or scale each output channel."""
    return [entry for entry in layer.channel_params if entry is not None]


def _gradient_scores(model, graph, batches, criterion, granularity):
    """taylor / grad scores from the gradients of the mean cross-entropy over the reference pixels."""
    parameters = {}
    for layer in graph.layers:
        for module, name in [(layer.module, layer.name)] + [(m, n) for m, n, _ in _channel_parameters(layer)]:
            parameters[(id(module), name)] = (module, name)
    keys = list(parameters)
    tensors = [_trainable(*parameters[key]) for key in keys]
    totals = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
    pixels = samples = 0
    with runtime.eval_mode(model), torch.enable_grad():
        for inputs, targets in batches:
            logits = cnn_lrp.class_scores(model(inputs))
            targets = cnn_lrp.target_mask(logits, targets).argmax(1)
            loss = F.cross_entropy(logits, targets, reduction="sum")
            for total, gradient in zip(totals, torch.autograd.grad(loss, tensors, allow_unused=True)):
                if gradient is not None:
                    total += gradient.double()
            pixels, samples = pixels + targets.numel(), samples + len(inputs)
    gradient_of = {key: total / pixels for key, total in zip(keys, totals)}
    scores = []
    for layer in graph.layers:
        weight = masked_weight(layer.module, layer.name).detach().double()
        weight_gradient = gradient_of[(id(layer.module), layer.name)]
        per_kernel = (weight * weight_gradient if criterion == "taylor" else weight_gradient)
        per_kernel = per_kernel.reshape(weight.shape[0], weight.shape[1], -1).sum(2)
        if granularity == "kernel":
            scores.append(per_kernel / samples)
            continue
        scores.append(_filter_gradient_score(layer, criterion, per_kernel, gradient_of) / samples)
    return scores


def _filter_gradient_score(layer, criterion, per_kernel, gradient_of):
    channel_parameters = _channel_parameters(layer)
    if criterion == "taylor":
        score = per_kernel.sum(1) if layer.batchnorm is None else torch.zeros(per_kernel.shape[0], dtype=torch.float64)
        for module, name, entries in channel_parameters:
            values = masked_weight(module, name).detach().double()
            score = score + (values * gradient_of[(id(module), name)])[torch.from_numpy(entries)]
        return score
    biases = [(module, name, entries) for module, name, entries in channel_parameters if name == "bias"]
    if not biases:
        raise ValueError(f"the grad criterion of a filter needs a bias or a BatchNorm after {layer.label}")
    module, name, entries = biases[0]
    return gradient_of[(id(module), name)][torch.from_numpy(entries)]


def _lrp_scores(model, graph, batches, granularity, rule, rules):
    total = None
    for inputs, targets in batches:
        found, _ = cnn_lrp.layer_relevance(model, graph, inputs, targets, rule, rules)
        if total is None:
            total = found
        else:
            for summed, layer in zip(total, found):
                summed += layer
    return [torch.from_numpy(r.channels if granularity == "filter" else r.kernels) for r in total]


def _weight_scores(graph, granularity, samples):
    scores = []
    for layer in graph.layers:
        weight = masked_weight(layer.module, layer.name).detach().double().abs()
        per_kernel = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(2) / samples
        scores.append(per_kernel if granularity == "kernel" else per_kernel.sum(1))
    return scores


def check_criterion(criterion, granularity):
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}, expected one of {CRITERIA}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}, expected one of {GRANULARITIES}")


def criterion_scores(model, graph, criterion, reference, granularity="kernel", rule="zplus", rules=None):
    """Raw scores of every layer of ``graph`` (float64 tensors, (out,) per filter or (out, in) per
    kernel); ``model`` maps the reference inputs to class scores."""
    check_criterion(criterion, granularity)
    if criterion == "weight":   # data-independent up to the toy spec's 1/n
        samples = 1 if reference is None else sum(len(inputs) for inputs, _ in reference_batches(reference))
        return _weight_scores(graph, granularity, samples)
    batches = reference_batches(reference)
    if criterion == "lrp":
        return _lrp_scores(model, graph, batches, granularity, rule, rules)
    return _gradient_scores(model, graph, batches, criterion, granularity)


def normalised_scores(scores, criterion, rule="zplus"):
    """Each layer's scores normalised as the toy spec does (a layer of zeros stays zero); the signed
    relevances of lrp's epsilon rule by the sum of their magnitudes (the toy's z+ ones are positive)."""
    normalisation = by_absolute_sum if (criterion, rule) == ("lrp", "epsilon") else NORMALISATIONS[criterion]
    return [torch.nan_to_num(normalisation(values), nan=0.0, posinf=0.0, neginf=0.0).numpy() for values in scores]


def lowest_kernels(scores, alive, remove_fraction):
    """Masks of the ``ceil(remove_fraction * alive)`` live kernels with the lowest scores."""
    layer_index = np.concatenate([np.full(a.sum(), i) for i, a in enumerate(alive)])
    flat_index = np.concatenate([np.flatnonzero(a) for a in alive])
    values = np.concatenate([s.ravel()[np.flatnonzero(a)] for s, a in zip(scores, alive)])
    order = np.lexsort((flat_index, layer_index, values))
    chosen = order[:int(np.ceil(remove_fraction * len(values) - 1e-9))]
    selections = [np.zeros(a.shape, dtype=bool) for a in alive]
    for i, flat in zip(layer_index[chosen], flat_index[chosen]):
        selections[i].flat[flat] = True
    return selections


def _readers(graph):
    """Per node: the (layer, column) of every convolution reading it, none for a channel that a
    residual addition ties to others (it stays alive when one of its filters goes)."""
    readers = [[] for _ in range(graph.num_nodes)]
    for index, layer in enumerate(graph.layers):
        for column, node in enumerate(layer.in_nodes.tolist()):
            readers[node].append((index, column))
    for node in np.unique(graph.skip_edges):
        readers[node] = []
    return readers


def lowest_filters(scores, alive, remove_fraction, graph=None):
    """Masks of whole filters, lowest scores first, until the live kernels that go with them reach
    ``remove_fraction`` of all live kernels: a filter's own, and (given the ``graph``) those that
    read its channel, which redundancy pruning removes with it."""
    live = [np.flatnonzero(a.any(1)) for a in alive]
    layer_index = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(live)])
    row_index = np.concatenate(live)
    values = np.concatenate([s[rows] for s, rows in zip(scores, live)])
    order = np.lexsort((row_index, layer_index, values))
    wanted = remove_fraction * sum(int(a.sum()) for a in alive) - 1e-9
    readers = _readers(graph) if graph is not None else None
    gone = [np.zeros(a.shape, dtype=bool) for a in alive]
    selections = [np.zeros(a.shape, dtype=bool) for a in alive]
    removed = 0
    for i, row in zip(layer_index[order], row_index[order]):
        if removed >= wanted:
            break
        selections[i][row] = alive[i][row]
        removed += int((alive[i][row] & ~gone[i][row]).sum())
        gone[i][row] |= alive[i][row]
        for j, column in (readers[graph.layers[i].out_nodes[row]] if readers is not None else ()):
            removed += int((alive[j][:, column] & ~gone[j][:, column]).sum())
            gone[j][:, column] |= alive[j][:, column]
    return selections


@dataclass
class ScoreSelection(Selection):
    """Prune by given raw scores (one array per graph layer, from :func:`criterion_scores`), so that
    scores computed once serve several one-shot prunings of copies of the same model."""

    scores: list
    criterion: str
    granularity: str = "kernel"
    rule: str = "zplus"

    def select(self, graph, remove_fraction):
        normalised = normalised_scores(self.scores, self.criterion, self.rule)
        alive = [kernel_alive(layer) for layer in graph.layers]
        if self.granularity == "kernel":
            return lowest_kernels(normalised, alive, remove_fraction)
        return lowest_filters(normalised, alive, remove_fraction, graph)


@dataclass
class CriterionSelection(Selection):
    """Prune the live filters or kernels with the lowest normalised criterion scores, all layers
    ranked together; the scores are computed on ``reference`` with the model as it is now."""

    criterion: str
    model: torch.nn.Module
    reference: object = None
    granularity: str = "kernel"
    rule: str = "zplus"
    rules: dict = field(default=None)

    def __post_init__(self):
        check_criterion(self.criterion, self.granularity)
        if self.criterion != "weight" and self.reference is None:
            raise ValueError(f"the {self.criterion} criterion needs reference samples (inputs, targets)")

    def select(self, graph, remove_fraction):
        scores = criterion_scores(self.model, graph, self.criterion, self.reference, self.granularity,
                                  self.rule, self.rules)
        return ScoreSelection(scores, self.criterion, self.granularity, self.rule).select(graph, remove_fraction)
