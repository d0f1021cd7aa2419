"""The four criteria, ranking, neuron removal and one run, checked against hand computations and slow
independent implementations (explicit loops, finite differences)."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import toy_datasets
from pruning_toolkit import toy_log
from pruning_toolkit import toy_model
import toy_pruning


def tiny_network(seed, widths=(4, 3, 3), num_classes=2):
    """The toy architecture at a hand-checkable size, in float64."""
    torch.manual_seed(seed)
    a, b, c = widths
    return nn.Sequential(nn.Linear(2, a), nn.ReLU(), nn.Dropout(0.5), nn.Linear(a, b), nn.ReLU(),
                         nn.Linear(b, c), nn.Linear(c, num_classes)).double().eval()


def numpy_layers(model):
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in model if isinstance(m, nn.Linear)]


def hidden_pre_activations(layers, x):
    """Outputs of the three hidden Linear layers for one sample (ReLU after the first two only)."""
    (w1, b1), (w2, b2), (w3, b3), _ = layers
    h1 = w1 @ x + b1
    h2 = w2 @ np.maximum(h1, 0) + b2
    h3 = w3 @ np.maximum(h2, 0) + b3
    return [h1, h2, h3]


def slow_zplus(inputs, weight, relevance):
    """LRP-z+ for one sample, one neuron at a time (the spec's formula, stabiliser 1e-9)."""
    result = np.zeros(len(inputs))
    for j in range(weight.shape[0]):
        contributions = [inputs[i] * max(weight[j, i], 0.0) for i in range(len(inputs))]
        denominator = sum(contributions) + 1e-9
        for i in range(len(inputs)):
            result[i] += contributions[i] / denominator * relevance[j]
    return result


def slow_lrp_scores(model, X, y):
    layers = numpy_layers(model)
    scores = [np.zeros(w.shape[0]) for w, _ in layers[:-1]]
    for x, label in zip(X.numpy(), y.numpy()):
        h1, h2, h3 = hidden_pre_activations(layers, x)
        (w2, _), (w3, _), (w4, b4) = layers[1], layers[2], layers[3]
        logits = w4 @ h3 + b4
        relevance_out = np.array([logits[k] if k == label else 0.0 for k in range(len(logits))])
        r3 = slow_zplus(h3, w4, relevance_out)
        r2 = slow_zplus(np.maximum(h2, 0), w3, r3)
        r1 = slow_zplus(np.maximum(h1, 0), w2, r2)
        for total, r in zip(scores, (r1, r2, r3)):
            total += r
    return scores


def loss_from(layers, X, y, layer, neuron, delta):
    """Mean cross-entropy with ``delta`` added to one hidden pre-activation of every sample."""
    (w2, b2), (w3, b3), (w4, b4) = layers[1], layers[2], layers[3]
    total = 0.0
    for x, label in zip(X.numpy(), y.numpy()):
        h = hidden_pre_activations(layers, x)
        h1 = h[0].copy()
        if layer == 0:
            h1[neuron] += delta
        h2 = w2 @ np.maximum(h1, 0) + b2
        if layer == 1:
            h2[neuron] += delta
        h3 = w3 @ np.maximum(h2, 0) + b3
        if layer == 2:
            h3[neuron] += delta
        logits = w4 @ h3 + b4
        total += math.log(np.exp(logits).sum()) - logits[label]
    return total / len(X)


def finite_difference_scores(model, X, y, criterion, step=1e-6):
    """taylor / grad by central differences of the loss w.r.t. each sample's activation."""
    layers = numpy_layers(model)
    scores = []
    for layer, (w, _) in enumerate(layers[:-1]):
        values = np.zeros(w.shape[0])
        for neuron in range(w.shape[0]):
            for b in range(len(X)):
                sample_X, sample_y = X[b:b + 1], y[b:b + 1]
                # d(mean loss)/d(activation of sample b) = d(loss_b)/d(activation) / n
                gradient = (loss_from(layers, sample_X, sample_y, layer, neuron, step)
                            - loss_from(layers, sample_X, sample_y, layer, neuron, -step)) / (2 * step) / len(X)
                activation = hidden_pre_activations(layers, X[b].numpy())[layer][neuron]
                values[neuron] += gradient * (activation if criterion == "taylor" else 1.0)
        scores.append(values / len(X))
    return scores


def sample_batch(seed, n=5, num_classes=2):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=generator, dtype=torch.float64),
            torch.randint(0, num_classes, (n,), generator=generator))


def hand_network():
    """x -> Linear(2,2) -> ReLU -> Linear(2,2): one hidden layer with neurons [1, -1] on x = [1, 2]."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 1.0]]))
        model[2].bias.zero_()
    return model, torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0])


def test_criteria_on_hand_computed_network():
    model, X, y = hand_network()
    # hidden [1, -1] -> ReLU [1, 0]; logits [2, -1]; R_out = [2, 0]; W2+ = [[2, 1], [0, 1]]
    # z+: Z = [2, 0]; R/Z = [1, 0]; R_hidden = [1, 0] * ([1, 0] @ W2+) = [2, 0]
    torch.testing.assert_close(toy_pruning.lrp_scores(model, X, y)[0], torch.tensor([2.0, 0.0], dtype=torch.float64))
    # dL/dlogits = [p0 - 1, 1 - p0]; dL/dhidden = relu'(h) * (W2^T dL/dlogits) = [3 (p0 - 1), 0]
    p0 = 1.0 / (1.0 + math.exp(-3.0))
    expected_gradient = torch.tensor([3 * (p0 - 1), 0.0], dtype=torch.float64)
    torch.testing.assert_close(toy_pruning.grad_scores(model, X, y)[0], expected_gradient)
    torch.testing.assert_close(toy_pruning.taylor_scores(model, X, y)[0],
                               expected_gradient * torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(toy_pruning.weight_scores(model, X, y)[0],
                               torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(toy_pruning.criterion_scores(model, X, y, "weight")[0],
                               torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(toy_pruning.criterion_scores(model, X, y, "taylor")[0],
                               torch.tensor([1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1])
def test_lrp_matches_slow_loop_implementation(seed):
    model = tiny_network(seed)
    X, y = sample_batch(seed)
    for ours, slow in zip(toy_pruning.lrp_scores(model, X, y), slow_lrp_scores(model, X, y)):
        np.testing.assert_allclose(ours.numpy(), slow, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("criterion", ["taylor", "grad"])
def test_gradient_criteria_match_finite_differences(criterion):
    model = tiny_network(2, num_classes=3)
    X, y = sample_batch(2, n=4, num_classes=3)
    slow_scores = finite_difference_scores(model, X, y, criterion)
    for ours, slow in zip(toy_pruning.SCORERS[criterion](model, X, y), slow_scores):
        np.testing.assert_allclose(ours.numpy(), slow, rtol=1e-5, atol=1e-8)


def test_weight_criterion_sums_absolute_incoming_weights():
    model = tiny_network(3)
    X, y = sample_batch(3, n=7)
    for ours, (weight, _) in zip(toy_pruning.weight_scores(model, X, y), numpy_layers(model)[:-1]):
        expected = [sum(abs(v) for v in row) / 7 for row in weight]
        np.testing.assert_allclose(ours.numpy(), expected)


def test_normalisation_per_criterion():
    v = [torch.tensor([1.0, -3.0, 4.0]), torch.tensor([2.0, 2.0])]
    lrp_normalised = toy_pruning.normalise(v, "lrp")
    torch.testing.assert_close(lrp_normalised[0], torch.tensor([0.5, -1.5, 2.0]))
    torch.testing.assert_close(lrp_normalised[1], torch.tensor([0.5, 0.5]))
    grad_normalised = toy_pruning.normalise(v, "grad")
    torch.testing.assert_close(grad_normalised[0], torch.tensor([1.0, 3.0, 4.0]) / math.sqrt(26))
    torch.testing.assert_close(grad_normalised[1], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    with pytest.raises(ValueError, match="unknown criterion"):
        toy_pruning.normalise(v, "random")


def test_criteria_leave_model_mode_and_weights_unchanged():
    model = tiny_network(4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X, y = sample_batch(4)
    for criterion in toy_pruning.CRITERIA:
        toy_pruning.criterion_scores(model, X, y, criterion)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_ranking_breaks_ties_by_layer_then_index():
    scores = [torch.tensor([0.5, 0.1, 0.5]), torch.tensor([0.1, 0.5])]
    assert toy_pruning.rank_neurons(scores).tolist() == [1, 3, 0, 2, 4]


def masked_copy(model, kept):
    """Reference for removal: zero the rows (and biases) of the removed neurons instead of deleting them."""
    masked = nn.Sequential(*[m for m in model]).double()
    masked.load_state_dict(model.state_dict())
    for index, keep in zip(toy_pruning.hidden_layer_indices(model), kept):
        removed = np.setdiff1d(np.arange(model[index].out_features), keep)
        masked = _zero_rows(masked, index, removed)
    return masked


def _zero_rows(model, index, rows):
    import copy
    model = copy.deepcopy(model)
    with torch.no_grad():
        model[index].weight[rows] = 0
        model[index].bias[rows] = 0
    return model


@pytest.mark.parametrize("count", [0, 3, 7, 10])
def test_removed_network_matches_masked_network(count):
    model = tiny_network(5, widths=(6, 5, 4), num_classes=3)
    X, _ = sample_batch(5, n=20, num_classes=3)
    order = np.random.default_rng(count).permutation(15)
    if count == 10:
        order = np.r_[np.arange(6, 11), np.arange(6), np.arange(11, 15)]  # empties the second layer entirely
    kept = toy_pruning.kept_neurons(order, [6, 5, 4], count)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = toy_pruning.remove_neurons(model, kept)
    assert sum(toy_pruning.hidden_widths(pruned)) == 15 - count
    assert toy_pruning.hidden_widths(pruned) == [len(k) for k in kept]
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), masked_copy(model, kept)(X))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_prune_removes_the_lowest_ranked_neurons():
    model = tiny_network(6, widths=(4, 3, 3))
    order = np.array([9, 0, 5, 1, 2, 3, 4, 6, 7, 8])
    pruned = toy_pruning.prune(model, order, count=3)  # removes layer 0 #0, layer 1 #1, layer 2 #2
    assert toy_pruning.hidden_widths(pruned) == [3, 2, 2]
    torch.testing.assert_close(pruned[0].weight, model[0].weight[1:])
    torch.testing.assert_close(pruned[3].weight, model[3].weight[[0, 2]][:, 1:])
    torch.testing.assert_close(pruned[5].weight, model[5].weight[[0, 1]][:, [0, 2]])
    torch.testing.assert_close(pruned[6].weight, model[6].weight[:, [0, 1]])
    torch.testing.assert_close(pruned[5].bias, model[5].bias[[0, 1]])
    with pytest.raises(ValueError, match="cannot remove"):
        toy_pruning.prune(model, order, count=11)


@pytest.fixture(scope="module")
def tiny_prepared():
    """A 40-wide, untrained toy model (the shipped ones are 1000 wide) on 200 moon points.

    These tests check what a run computes and logs, not how well it prunes, so training is skipped.
    """
    torch.manual_seed(0)
    X, y = toy_datasets.generate("moon", 200, 0)
    return toy_pruning.prepare("moon", "cpu", model=toy_model.build_model(2, hidden_width=40), training_set=(X, y))


def test_one_run_writes_four_parseable_lines_and_is_deterministic(tiny_prepared):
    result = toy_pruning.run(tiny_prepared, "lrp", 3, 7, count=40)
    again = toy_pruning.run(tiny_prepared, "lrp", 3, 7, count=40)
    assert result.lines == again.lines
    records = [toy_log.parse_line(line) for line in result.lines]
    assert [(r.scenario, r.stage) for r in records] == [("train", "pre"), ("test", "pre"), ("train", "post"),
                                                        ("test", "post")]
    assert all((r.dataset, r.criterion, r.total_samples, r.seed) == ("moon", "lrp", 6, 7) for r in records)
    assert records[0].value == tiny_prepared.train_accuracy
    assert sum(toy_pruning.hidden_widths(result.pruned_model)) == 80
    assert records[2].value == toy_model.accuracy(result.pruned_model, tiny_prepared.train_X, tiny_prepared.train_y)
    reference_X, reference_y = toy_datasets.reference_samples("moon", 3, 7)
    assert records[3].value == toy_model.accuracy(result.pruned_model, reference_X, reference_y)


@pytest.mark.parametrize("criterion", toy_pruning.CRITERIA)
def test_pre_pruning_test_accuracy_reuses_the_criterion_forward_pass_exactly(tiny_prepared, criterion):
    X, y = (torch.as_tensor(a) for a in toy_datasets.reference_samples("moon", 5, 2))
    _, logits = toy_pruning.scores_and_logits(tiny_prepared.model, X, y, criterion)
    if logits is not None:
        with torch.no_grad():
            assert torch.equal(logits, tiny_prepared.model(X))
    record = toy_log.parse_line(toy_pruning.run(tiny_prepared, criterion, 5, 2, count=40).lines[1])
    assert record.value == toy_model.accuracy(tiny_prepared.model, X, y)


def test_runs_removing_the_same_neurons_evaluate_the_training_set_once(tiny_prepared, monkeypatch):
    prepared = dataclasses.replace(tiny_prepared, pruned_train_accuracy={})
    evaluated = []
    plain_accuracy = toy_model.accuracy

    def counted_accuracy(model, X, y):
        evaluated.append(len(y))
        return plain_accuracy(model, X, y)

    monkeypatch.setattr(toy_model, "accuracy", counted_accuracy)
    first = toy_pruning.run(prepared, "weight", 2, 1, count=40)
    second = toy_pruning.run(prepared, "weight", 5, 9, count=40)  # weight ignores the reference samples
    assert set(first.order[:40]) == set(second.order[:40])
    assert evaluated.count(len(prepared.train_y)) == 1 and len(prepared.pruned_train_accuracy) == 1
    post_train = toy_log.parse_line(second.lines[2]).value
    assert post_train == toy_log.parse_line(first.lines[2]).value
    assert post_train == plain_accuracy(second.pruned_model, prepared.train_X, prepared.train_y)
    third = toy_pruning.run(prepared, "lrp", 2, 1, count=40)
    assert set(third.order[:40]) != set(first.order[:40]) and len(prepared.pruned_train_accuracy) == 2
    assert toy_log.parse_line(third.lines[2]).value == plain_accuracy(third.pruned_model, prepared.train_X,
                                                                       prepared.train_y)


def test_rank_log_run_logs_the_order_and_prunes_nothing(tiny_prepared):
    result = toy_pruning.run(tiny_prepared, "taylor", 2, 1, rank_log=True)
    (line,) = result.lines
    record = toy_log.parse_line(line)
    assert (record.scenario, record.stage, record.total_samples) == ("rankselection", "pre", 4)
    X, y = (torch.as_tensor(a) for a in toy_datasets.reference_samples("moon", 2, 1))
    expected = toy_pruning.rank_neurons(toy_pruning.criterion_scores(tiny_prepared.model, X, y, "taylor"))
    assert record.value == expected.tolist()
    assert " " not in line.split(" ", 1)[1]
    assert result.pruned_model is None


def test_noisy_test_scenario_uses_500_noisy_points(tiny_prepared):
    plain = toy_pruning.run(tiny_prepared, "grad", 2, 3, count=40)
    noisy = toy_pruning.run(tiny_prepared, "grad", 2, 3, noisy_sigma=0.3, count=40)
    assert plain.lines[2] == noisy.lines[2]  # same reference samples, same pruning
    assert len(noisy.evaluations[1].y) == 500
    noisy_X, _ = toy_datasets.noisy_test_set("moon", 3, 0.3)
    np.testing.assert_array_equal(noisy.evaluations[1].X.numpy(), noisy_X)


def test_run_rejects_bad_arguments(tiny_prepared):
    with pytest.raises(ValueError, match="unknown criterion"):
        toy_pruning.run(tiny_prepared, "random", 2, 1)
    with pytest.raises(ValueError, match="at least 1"):
        toy_pruning.run(tiny_prepared, "lrp", 0, 1)


shipped = pytest.mark.skipif(not (toy_model.model_path("moon").is_file()
                                  and toy_datasets.training_set_path("moon").is_file()),
                             reason="shipped moon model or training set not present")


@pytest.mark.parametrize("dataset, required_accuracy", [("moon", 99.5), ("circle", 99.5), ("mult", 94.0)])
def test_shipped_models_reach_the_spec_accuracy_and_record_their_recipe(dataset, required_accuracy):
    if not (toy_model.model_path(dataset).is_file() and toy_datasets.training_set_path(dataset).is_file()):
        pytest.skip(f"shipped {dataset} model or training set not present")
    X, y = toy_datasets.load_training_set(dataset)
    accuracy = toy_model.accuracy(toy_model.load_model(dataset), X, y)
    recipe = toy_model.load_recipe(dataset)
    assert accuracy >= required_accuracy
    assert recipe["dataset"] == dataset and recipe["seed"] == toy_model.TRAINING_SEED
    assert recipe["train_accuracy"] == pytest.approx(accuracy)


@shipped
def test_shipped_moon_model_lrp_keeps_training_accuracy():
    """The paper's qualitative result in one run: lrp on 10 samples per class costs < 0.5 points."""
    prepared = toy_pruning.prepare("moon")
    result = toy_pruning.run(prepared, "lrp", 10, 1)
    assert sum(toy_pruning.hidden_widths(result.pruned_model)) == 2000
    assert result.evaluations[2].accuracy >= prepared.train_accuracy - 0.5


def test_unusable_checkpoints_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        toy_pruning.load_trained_model("moon", tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is not a toy model checkpoint for moon"):
        toy_pruning.load_trained_model("moon", tmp_path / "garbage.pt")
    toy_model.save_model(toy_model.build_model(2, hidden_width=10), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="small.pt is not a toy model checkpoint for moon: .*size mismatch"):
        toy_pruning.load_trained_model("moon", tmp_path / "small.pt")
