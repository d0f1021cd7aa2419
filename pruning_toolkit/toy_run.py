"""One run of the toy experiment: score the hidden neurons on reference samples, remove the
lowest-ranked in one shot ("Pruning by Explaining", Yeom et al. 2021), evaluate before and after.

:func:`prepare` loads what every run on one dataset shares (the model, the training set and its
accuracy before pruning); :func:`run` does one run and returns its log lines.
"""
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pruning_toolkit import toy_data, toy_log, toy_model
from pruning_toolkit.toy_criteria import get_criterion, scores_and_logits
from pruning_toolkit.toy_neurons import prune, rank_neurons
from pruning_toolkit.toy_vocabulary import PRUNED_NEURONS, RANK_SCENARIO


@dataclass(frozen=True)
class PreparedDataset:
    """What every run on one dataset shares: the model, the training set and its pre-pruning accuracy.

    ``pruned_train_accuracy`` remembers the training accuracy of each pruned model by its removed
    neurons: runs that remove the same neurons (the weight criterion removes the same ones for
    every seed and sample count) evaluate the training set once."""
    dataset: str
    model: nn.Sequential
    train_X: torch.Tensor
    train_y: torch.Tensor
    train_accuracy: float
    pruned_train_accuracy: dict = field(default_factory=dict, compare=False, repr=False)


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


def _shipped_training_set(dataset):
    """The shipped training set of ``dataset``; FileNotFoundError with the path when it is missing."""
    path = toy_data.training_set_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"training set {path} not found (it ships in data/; write it again with: python -c "
                                f"\"from pruning_toolkit import toy_data; toy_data.write_training_set('{dataset}')\")")
    return toy_data.load_training_set(dataset)


def prepare(dataset, device="cpu", model=None, training_set=None):
    """Load (or take) the model and training set of ``dataset`` and evaluate the unpruned model once."""
    device = torch.device(device)
    model = (model if model is not None else load_trained_model(dataset)).to(device).eval()
    X, y = training_set if training_set is not None else _shipped_training_set(dataset)
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
    get_criterion(criterion)  # an unknown criterion is refused before anything is computed
    if samples_per_class < 1:
        raise ValueError(f"samples per class must be at least 1, got {samples_per_class}")
    torch.manual_seed(seed)
    dataset, model, device = prepared.dataset, prepared.model, prepared.train_X.device
    reference_X, reference_y = (torch.as_tensor(a, device=device)
                                for a in toy_data.reference_samples(dataset, samples_per_class, seed))
    total_samples = len(reference_y)

    def key(scenario, stage):
        return toy_log.format_key(dataset, criterion, total_samples, seed, scenario, stage)

    normalised, reference_logits = scores_and_logits(model, reference_X, reference_y, criterion)
    order = rank_neurons(normalised)
    if rank_log:
        return RunResult([toy_log.format_rank_line(key(RANK_SCENARIO, "pre"), order)], [], order, None)

    if noisy_sigma > 0:
        test_X, test_y = (torch.as_tensor(a, device=device)
                          for a in toy_data.noisy_test_set(dataset, seed, noisy_sigma))
        reference_logits = None
    else:
        test_X, test_y = reference_X, reference_y
    pruned_model = prune(model, order, count)
    removed = np.sort(order[:count]).astype(np.uint16).tobytes()
    evaluations = [Evaluation(key(scenario, stage), stage, scenario, stage_model, X, y, accuracy)
                   for stage, stage_model, scenario, X, y, accuracy in _evaluate(
                       prepared, pruned_model, removed, test_X, test_y, reference_logits)]
    lines = [toy_log.format_accuracy_line(e.key, e.accuracy) for e in evaluations]
    return RunResult(lines, evaluations, order, pruned_model)


def _evaluate(prepared, pruned_model, removed, test_X, test_y, pre_test_logits):
    """``(stage, model, scenario, X, y, accuracy)`` for train/test before and after pruning.

    The unpruned model's training accuracy comes from ``prepared`` and, when given, its test
    accuracy from the logits the criterion already computed; the pruned model's training
    accuracy is remembered in ``prepared`` under ``removed`` (its removed neurons): nothing is
    evaluated twice.
    """
    for stage, model in (("pre", prepared.model), ("post", pruned_model)):
        for scenario, X, y in (("train", prepared.train_X, prepared.train_y), ("test", test_X, test_y)):
            if stage == "pre" and scenario == "train":
                accuracy = prepared.train_accuracy
            elif stage == "pre" and pre_test_logits is not None:
                accuracy = toy_model.accuracy_of_logits(pre_test_logits, y)
            elif scenario == "train":
                cache = prepared.pruned_train_accuracy
                if removed not in cache:
                    cache[removed] = toy_model.accuracy(model, X, y)
                accuracy = cache[removed]
            else:
                accuracy = toy_model.accuracy(model, X, y)
            yield stage, model, scenario, X, y, accuracy
