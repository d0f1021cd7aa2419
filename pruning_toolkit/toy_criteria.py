"""The four pruning criteria of "Pruning by Explaining": lrp, taylor, grad and weight.

A criterion scores every neuron of the toy MLP's hidden Linear layers (all Linear layers but the
last) on reference samples, then normalises the scores per layer so that layers compare.
:data:`CRITERION_TABLE` maps each criterion's name to its :class:`Criterion` (scores function and
normalisation); the functions below it are thin views of that one table.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pruning_toolkit import lrp, runtime
from pruning_toolkit.normalisation import NORMALISATIONS
from pruning_toolkit.toy_model import hidden_layer_indices
from pruning_toolkit.toy_vocabulary import CRITERIA

LRP_RULES = (
    (nn.Linear, lrp.ZPlusRule(stabiliser=1e-9)),
    ((nn.ReLU, nn.Dropout), lrp.PassRule()),
)


# ---------------------------------------------------------------------------------------------
# raw scores per hidden layer, and the logits on the samples when computing the scores produced them
# ---------------------------------------------------------------------------------------------

def _lrp_scores_and_logits(model, X, y):
    """Per hidden layer: LRP-z+ relevance at the layer's output, summed over the batch.

    Relevance starts at the output as ``logits * onehot(y)``; ReLU and Dropout pass it unchanged.
    """
    indices = hidden_layer_indices(model)
    seen = {}

    def initial_relevance(logits):
        seen["logits"] = logits
        return logits * nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)

    with runtime.eval_mode(model):
        _, recorded = lrp.propagate(model, X, initial_relevance, LRP_RULES, record=indices)
    return [recorded[i].sum(dim=0) for i in indices], seen["logits"]


def _activations_gradients_and_logits(model, X, y):
    """Outputs of the hidden Linear layers, the gradients of the mean cross-entropy w.r.t. them, the logits."""
    indices = set(hidden_layer_indices(model))
    activations = []
    with runtime.eval_mode(model), torch.enable_grad():
        output = X
        for index, layer in enumerate(model):
            output = layer(output)
            if index in indices:
                activations.append(output)
        loss = nn.functional.cross_entropy(output, y)
        gradients = torch.autograd.grad(loss, activations)
    return [a.detach() for a in activations], gradients, output.detach()


def _taylor_scores_and_logits(model, X, y):
    """Per hidden layer: ``sum_batch(activation * dL/dactivation) / n``, L the mean cross-entropy."""
    activations, gradients, logits = _activations_gradients_and_logits(model, X, y)
    return [(a * g).sum(dim=0) / len(X) for a, g in zip(activations, gradients)], logits


def _grad_scores_and_logits(model, X, y):
    """Per hidden layer: ``sum_batch(dL/dactivation) / n``."""
    _, gradients, logits = _activations_gradients_and_logits(model, X, y)
    return [g.sum(dim=0) / len(X) for g in gradients], logits


def _weight_scores_and_logits(model, X, y):
    """Per hidden layer: ``sum_inputs |W[neuron, :]| / n`` (data-independent up to the constant); no logits."""
    with torch.no_grad():
        return [model[i].weight.abs().sum(dim=1) / len(X) for i in hidden_layer_indices(model)], None


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Criterion:
    """One criterion. ``scores_and_logits(model, X, y)`` returns the raw score of every neuron, one
    tensor per hidden layer, and the model's logits on ``X`` when computing the scores produced
    them (``None`` otherwise), so that a run need not evaluate twice; ``normalisation`` maps one
    layer's raw scores to scores comparable across layers."""
    scores_and_logits: Callable
    normalisation: Callable

    def scores(self, model, X, y):
        """The raw scores per hidden layer."""
        return self.scores_and_logits(model, X, y)[0]


CRITERION_TABLE = {
    "lrp": Criterion(_lrp_scores_and_logits, NORMALISATIONS["lrp"]),
    "taylor": Criterion(_taylor_scores_and_logits, NORMALISATIONS["taylor"]),
    "grad": Criterion(_grad_scores_and_logits, NORMALISATIONS["grad"]),
    "weight": Criterion(_weight_scores_and_logits, NORMALISATIONS["weight"]),
}
assert tuple(CRITERION_TABLE) == CRITERIA, "one Criterion per name of the vocabulary, in its order"


def get_criterion(name):
    """The :class:`Criterion` called ``name``; ValueError listing the choices for an unknown name."""
    try:
        return CRITERION_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; choices: {', '.join(CRITERIA)}") from None


# views of the table's raw scores, ``(model, X, y) -> [tensor per hidden layer]``, by name
SCORERS = {name: criterion.scores for name, criterion in CRITERION_TABLE.items()}
lrp_scores = SCORERS["lrp"]
taylor_scores = SCORERS["taylor"]
grad_scores = SCORERS["grad"]
weight_scores = SCORERS["weight"]


def normalise(layer_scores, criterion):
    """Per-layer normalisation: ``v / sum(v)`` for lrp and weight, ``|v| / ||v||_2`` for taylor and grad."""
    normalisation = get_criterion(criterion).normalisation
    return [normalisation(v) for v in layer_scores]


def scores_and_logits(model, X, y, criterion):
    """Normalised scores of ``criterion`` per hidden layer on ``X``, ``y``, and the model's logits on ``X``
    when computing the scores produced them (``None`` for weight), so a run need not evaluate twice."""
    chosen = get_criterion(criterion)
    layer_scores, logits = chosen.scores_and_logits(model, X, y)
    return [chosen.normalisation(v) for v in layer_scores], logits


def criterion_scores(model, X, y, criterion):
    """Normalised scores of ``criterion`` per hidden layer, computed on the samples ``X``, ``y``."""
    return scores_and_logits(model, X, y, criterion)[0]
