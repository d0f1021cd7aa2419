"""Per-layer normalisation of criterion scores ("Pruning by Explaining"), shared by the toy MLP
and the CNN criteria, so that the scores of different layers can be ranked together."""
import torch


def by_sum(values):
    """``v / sum(v)`` (lrp, weight)."""
    return values / values.sum()


def by_absolute_sum(values):
    """``v / sum(|v|)`` (lrp with a signed rule, epsilon): ``by_sum`` when no score is negative, while a
    layer whose relevances sum to a negative number keeps its order (``by_sum`` would invert it) and one
    whose sum is near zero is not blown up."""
    return values / values.abs().sum()


def by_l2_norm(values):
    """``|v| / ||v||_2`` (taylor, grad)."""
    return values.abs() / torch.linalg.vector_norm(values)


NORMALISATIONS = {"lrp": by_sum, "taylor": by_l2_norm, "grad": by_l2_norm, "weight": by_sum}
