"""Pruning the toy MLP: the four criteria, neuron ranking, physical neuron removal, one run.

Scores are computed per neuron of the hidden Linear layers (all Linear layers but the last)
on reference samples, normalised per layer, ranked across layers, and the lowest-ranked
neurons are removed in one shot ("Pruning by Explaining", Yeom et al. 2021).

The public surface of ``pruning_toolkit.toy_criteria`` (the criteria), ``toy_neurons`` (ranking
and removal), ``toy_run`` (prepare, one run) and ``toy_model`` (hidden layers of the network).
"""
from pruning_toolkit.toy_criteria import (CRITERION_TABLE, LRP_RULES, SCORERS, Criterion, criterion_scores,
                                          get_criterion, grad_scores, lrp_scores, normalise, scores_and_logits,
                                          taylor_scores, weight_scores)
from pruning_toolkit.toy_model import accuracy_of_logits, hidden_layer_indices, hidden_widths
from pruning_toolkit.toy_neurons import kept_neurons, prune, rank_neurons, remove_neurons
from pruning_toolkit.toy_run import Evaluation, PreparedDataset, RunResult, load_trained_model, prepare, run
from pruning_toolkit.toy_vocabulary import CRITERIA, PRUNED_NEURONS

__all__ = [
    "CRITERIA", "CRITERION_TABLE", "Criterion", "LRP_RULES", "PRUNED_NEURONS", "SCORERS",
    "criterion_scores", "get_criterion", "grad_scores", "lrp_scores", "normalise", "scores_and_logits",
    "taylor_scores", "weight_scores",
    "accuracy_of_logits", "hidden_layer_indices", "hidden_widths",
    "kept_neurons", "prune", "rank_neurons", "remove_neurons",
    "Evaluation", "PreparedDataset", "RunResult", "load_trained_model", "prepare", "run",
]
