"""Pruning the toy MLP: the four criteria, neuron ranking, physical neuron removal, one run.

Scores are computed per neuron of the hidden Linear layers (all Linear layers but the last)
on reference samples, normalised per layer, ranked across layers, and the lowest-ranked
neurons are removed in one shot ("Pruning by Explaining", Yeom et al. 2021).
"""
import copy
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrp
import toy_datasets
from pruning_toolkit import toy_log
from pruning_toolkit import runtime, toy_model

CRITERIA = toy_log.CRITERIA
PRUNED_NEURONS = 1000
LRP_RULES = (
    (nn.Linear, lrp.ZPlusRule(stabiliser=1e-9)),
    ((nn.ReLU, nn.Dropout), lrp.PassRule()),
)


def hidden_layer_indices(model):
    """Positions in ``model`` (an ``nn.Sequential``) of the Linear layers whose neurons are pruned."""
    linear_indices = [i for i, layer in enumerate(model) if isinstance(layer, nn.Linear)]
    return linear_indices[:-1]


def _lrp_scores_and_logits(model, X, y):
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
    activations, gradients, logits = _activations_gradients_and_logits(model, X, y)
    return [(a * g).sum(dim=0) / len(X) for a, g in zip(activations, gradients)], logits


def _grad_scores_and_logits(model, X, y):
    _, gradients, logits = _activations_gradients_and_logits(model, X, y)
    return [g.sum(dim=0) / len(X) for g in gradients], logits


def _weight_scores_and_logits(model, X, y):
    with torch.no_grad():
        return [model[i].weight.abs().sum(dim=1) / len(X) for i in hidden_layer_indices(model)], None


_SCORES_AND_LOGITS = {"lrp": _lrp_scores_and_logits, "taylor": _taylor_scores_and_logits,
                      "grad": _grad_scores_and_logits, "weight": _weight_scores_and_logits}


def lrp_scores(model, X, y):
    """Per hidden layer: LRP-z+ relevance at the layer's output, summed over the batch.

    Relevance starts at the output as ``logits * onehot(y)``; ReLU and Dropout pass it unchanged.
    """
    return _lrp_scores_and_logits(model, X, y)[0]


def taylor_scores(model, X, y):
    """Per hidden layer: ``sum_batch(activation * dL/dactivation) / n``, L the mean cross-entropy."""
    return _taylor_scores_and_logits(model, X, y)[0]


def grad_scores(model, X, y):
    """Per hidden layer: ``sum_batch(dL/dactivation) / n``."""
    return _grad_scores_and_logits(model, X, y)[0]


def weight_scores(model, X, y):
    """Per hidden layer: ``sum_inputs |W[neuron, :]| / n`` (data-independent up to the constant)."""
    return _weight_scores_and_logits(model, X, y)[0]


SCORERS = {"lrp": lrp_scores, "taylor": taylor_scores, "grad": grad_scores, "weight": weight_scores}


def normalise(layer_scores, criterion):
    """Per-layer normalisation: ``v / sum(v)`` for lrp and weight, ``|v| / ||v||_2`` for taylor and grad."""
    if criterion in ("lrp", "weight"):
        return [v / v.sum() for v in layer_scores]
    if criterion in ("taylor", "grad"):
        return [v.abs() / torch.linalg.vector_norm(v) for v in layer_scores]
    raise ValueError(f"unknown criterion {criterion!r}; choices: {', '.join(CRITERIA)}")


def scores_and_logits(model, X, y, criterion):
    """Normalised scores of ``criterion`` per hidden layer on ``X``, ``y``, and the model's logits on ``X``
    when computing the scores produced them (``None`` for weight), so a run need not evaluate twice."""
    if criterion not in _SCORES_AND_LOGITS:
        raise ValueError(f"unknown criterion {criterion!r}; choices: {', '.join(CRITERIA)}")
    layer_scores, logits = _SCORES_AND_LOGITS[criterion](model, X, y)
    return normalise(layer_scores, criterion), logits


def criterion_scores(model, X, y, criterion):
    """Normalised scores of ``criterion`` per hidden layer, computed on the samples ``X``, ``y``."""
    return scores_and_logits(model, X, y, criterion)[0]


def accuracy_of_logits(logits, y):
    """Accuracy in percent, computed as :func:`toy_model.accuracy` does."""
    return 100.0 * (logits.argmax(dim=1) == y).sum().item() / len(y)


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


def hidden_widths(model):
    """The number of neurons of each hidden Linear layer (the real size of a pruned model)."""
    return [model[i].out_features for i in hidden_layer_indices(model)]


def prune(model, order, count=PRUNED_NEURONS):
    """Remove the first ``count`` neurons of ``order`` (from :func:`rank_neurons`) from ``model``."""
    return remove_neurons(model, kept_neurons(order, hidden_widths(model), count))


@dataclass(frozen=True)
class PreparedDataset:
    """What every run on one dataset shares: the model, the training set and its pre-pruning accuracy."""
    dataset: str
    model: nn.Sequential
    train_X: torch.Tensor
    train_y: torch.Tensor
    train_accuracy: float


def load_trained_model(dataset, path=None):
    """The shipped model of ``dataset``; FileNotFoundError or ValueError with the path when unusable."""
    path = Path(path or toy_model.model_path(dataset))
    if not path.is_file():
        raise FileNotFoundError(f"trained model {path} not found (train it with: python -m pruning_toolkit.toy_model)")
    try:
        return toy_model.load_model(dataset, path)
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())[:300]
        raise ValueError(f"{path} is not a toy model checkpoint for {dataset}: "
                         f"{reason or type(error).__name__}") from None


def load_training_set(dataset):
    path = toy_datasets.training_set_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"training set {path} not found (generate it with: python -m pruning_toolkit.toy_model)")
    return toy_datasets.load_training_set(dataset)


def prepare(dataset, device="cpu", model=None, training_set=None):
    """Load (or take) the model and training set of ``dataset`` and evaluate the unpruned model once."""
    device = torch.device(device)
    model = (model if model is not None else load_trained_model(dataset)).to(device).eval()
    X, y = training_set if training_set is not None else load_training_set(dataset)
    train_X, train_y = torch.as_tensor(X, device=device), torch.as_tensor(y, device=device)
    return PreparedDataset(dataset, model, train_X, train_y, toy_model.accuracy(model, train_X, train_y))


@dataclass(frozen=True)
class Evaluation:
    """One evaluated (model, data) pair; ``key`` names its log line and its SVG."""
    key: str
    stage: str
    scenario: str
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    accuracy: float


@dataclass(frozen=True)
class RunResult:
    """The log lines of one run, the evaluations behind them, the neuron order and the pruned model."""
    lines: list
    evaluations: list
    order: np.ndarray
    pruned_model: object


def run(prepared, criterion, samples_per_class, seed, noisy_sigma=0.0, rank_log=False, count=PRUNED_NEURONS):
    """One run: score neurons on the reference samples, prune ``count`` of them, evaluate before and after.

    With ``rank_log`` nothing is pruned or evaluated; the only line is the neuron order. With
    ``noisy_sigma > 0`` the test scenario uses the noisy test set instead of the reference
    samples. Returns the log lines (train/test pre, then train/test post) and what produced them.
    """
    if criterion not in SCORERS:
        raise ValueError(f"unknown criterion {criterion!r}; choices: {', '.join(CRITERIA)}")
    if samples_per_class < 1:
        raise ValueError(f"samples per class must be at least 1, got {samples_per_class}")
    torch.manual_seed(seed)
    dataset, model, device = prepared.dataset, prepared.model, prepared.train_X.device
    reference_X, reference_y = (torch.as_tensor(a, device=device)
                                for a in toy_datasets.reference_samples(dataset, samples_per_class, seed))
    total_samples = len(reference_y)

    def key(scenario, stage):
        return toy_log.format_key(dataset, criterion, total_samples, seed, scenario, stage)

    normalised, reference_logits = scores_and_logits(model, reference_X, reference_y, criterion)
    order = rank_neurons(normalised)
    if rank_log:
        return RunResult([toy_log.format_rank_line(key(toy_log.RANK_SCENARIO, "pre"), order)], [], order, None)

    if noisy_sigma > 0:
        test_X, test_y = (torch.as_tensor(a, device=device)
                          for a in toy_datasets.noisy_test_set(dataset, seed, noisy_sigma))
        reference_logits = None
    else:
        test_X, test_y = reference_X, reference_y
    pruned_model = prune(model, order, count)
    evaluations = [Evaluation(key(scenario, stage), stage, scenario, stage_model, X, y, accuracy)
                   for stage, stage_model, scenario, X, y, accuracy in _evaluate(
                       prepared, pruned_model, test_X, test_y, reference_logits)]
    lines = [toy_log.format_accuracy_line(e.key, e.accuracy) for e in evaluations]
    return RunResult(lines, evaluations, order, pruned_model)


def _evaluate(prepared, pruned_model, test_X, test_y, pre_test_logits):
    """``(stage, model, scenario, X, y, accuracy)`` for train/test before and after pruning.

    The unpruned model's training accuracy comes from ``prepared`` and, when given, its test
    accuracy from the logits the criterion already computed: nothing is evaluated twice.
    """
    for stage, model in (("pre", prepared.model), ("post", pruned_model)):
        for scenario, X, y in (("train", prepared.train_X, prepared.train_y), ("test", test_X, test_y)):
            if stage == "pre" and scenario == "train":
                accuracy = prepared.train_accuracy
            elif stage == "pre" and pre_test_logits is not None:
                accuracy = accuracy_of_logits(pre_test_logits, y)
            else:
                accuracy = toy_model.accuracy(model, X, y)
            yield stage, model, scenario, X, y, accuracy
