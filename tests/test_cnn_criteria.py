"""The four "Pruning by Explaining" criteria on CNNs (cnn_criteria) and their pruning methods."""
import numpy as np
import pytest
import torch
from torch import nn

import pruning_algorithms as lean
import pruning_utils
from lean_helpers import narrow_fcn, random_msd
from pruning_toolkit import cnn_criteria, toy_criteria, toy_model
from pruning_toolkit.cnn_criteria import CriterionSelection, criterion_scores, lowest_filters, lowest_kernels
from pruning_toolkit.graph_tracing import trace_channel_graph
from pruning_toolkit.norm_graph import resnet50_channel_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def as_pointwise_convolutions(mlp):
    """The toy MLP with every Linear layer as the equivalent 1x1 Conv1d (inputs of length 1)."""
    layers = []
    for module in mlp:
        if isinstance(module, nn.Linear):
            conv = nn.Conv1d(module.in_features, module.out_features, 1)
            with torch.no_grad():
                conv.weight.copy_(module.weight[:, :, None])
                conv.bias.copy_(module.bias)
            module = conv
        layers.append(module)
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("criterion", cnn_criteria.CRITERIA)
def test_on_the_toy_mlp_the_cnn_criteria_give_the_toy_scores(criterion):
    torch.manual_seed(0)
    mlp = toy_model.build_model(3, hidden_width=24).eval()
    X, y = torch.randn(9, 2), torch.randint(0, 3, (9,))
    conv = as_pointwise_convolutions(mlp)
    graph = trace_channel_graph(conv, X[:, :, None])
    toy = toy_criteria.get_criterion(criterion).scores(mlp, X, y)
    ours = criterion_scores(conv, graph, criterion, (X[:, :, None], y[:, None]), "filter")[:3]   # hidden layers
    for expected, got in zip(toy, ours):             # equal up to float32 rounding (the toy computes in float32)
        torch.testing.assert_close(got, expected.double(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    for expected, got in zip(toy_criteria.normalise(toy, criterion), cnn_criteria.normalised_scores(ours, criterion)):
        np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def activation_gradients(model, graph, x, target):
    """Per layer: sum(a * dL/da) and sum(dL/da) over samples and pixels, a = the layer's output after its
    BatchNorm, from hooks on those outputs (the slow way)."""
    outputs = {}

    def keep(module, args, output):
        output.retain_grad()
        outputs[id(module)] = output
        return output.clone()          # what follows may be an in-place ReLU

    producers = [layer.batchnorm if layer.batchnorm is not None else layer.module for layer in graph.layers]
    handles = [module.register_forward_hook(keep) for module in producers]
    try:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits["out"] if isinstance(logits, dict) else logits, target)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    taylor = [(outputs[id(m)] * outputs[id(m)].grad).double().sum((0, 2, 3)) / len(x) for m in producers]
    grad = [outputs[id(m)].grad.double().sum((0, 2, 3)) / len(x) for m in producers]
    return taylor, grad


def test_filter_taylor_and_grad_from_parameter_gradients_equal_the_activation_definition():
    model = narrow_fcn(3, num_classes=3)
    x, target = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    graph = resnet50_channel_graph(model)
    taylor, grad = activation_gradients(model, graph, x, target)
    for name, expected in (("taylor", taylor), ("grad", grad)):
        got = criterion_scores(model, graph, name, (x, target), "filter")
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)


def test_kernel_taylor_of_a_layer_without_batchnorm_sums_to_its_filter_taylor_minus_the_bias_term():
    model = random_msd(2, c_in=1, c_out=3, depth=6)
    x, target = torch.rand(2, 1, 12, 12), torch.randint(0, 3, (2, 12, 12))
    graph = trace_channel_graph(model.msd, x)
    filters = criterion_scores(model.msd, graph, "taylor", (x, target), "filter")
    kernels = criterion_scores(model.msd, graph, "taylor", (x, target), "kernel")
    model.msd.zero_grad()
    nn.functional.cross_entropy(model.msd(x), target).backward()
    bias = model.msd.msd_block.bias
    for k, (f, kern) in enumerate(zip(filters[:-1], kernels[:-1])):
        bias_term = (bias * bias.grad)[k:k + 1].double() / len(x)
        torch.testing.assert_close(kern.sum(1) + bias_term, f, rtol=1e-4, atol=1e-9)


def test_signed_epsilon_relevances_keep_their_order_in_a_layer_whose_sum_is_negative():
    inhibiting, balanced = torch.tensor([-3.0, -1.0, 2.0]), torch.tensor([5.0, -4.9, 0.1])
    epsilon = cnn_criteria.normalised_scores([inhibiting, balanced], "lrp", "epsilon")
    np.testing.assert_allclose(epsilon[0], [-0.5, -1 / 6, 1 / 3])
    np.testing.assert_allclose(epsilon[1], [0.5, -0.49, 0.01])           # not blown up by the sum 0.2
    zplus = cnn_criteria.normalised_scores([inhibiting], "lrp")          # the toy's v / sum(v) inverts it
    np.testing.assert_allclose(zplus[0], [1.5, 0.5, -1.0])
    positive = torch.tensor([1.0, 3.0])
    np.testing.assert_allclose(cnn_criteria.normalised_scores([positive], "lrp", "epsilon")[0],
                               cnn_criteria.normalised_scores([positive], "lrp")[0])
    # the selection of an epsilon run removes the most negative relevance of the inhibiting layer first
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    graph = trace_channel_graph(model, torch.zeros(1, 1, 8, 8))
    scores = [torch.tensor([[-3.0], [-1.0], [2.0]]), torch.tensor([[10.0, 10.0, 10.0], [10.0, 10.0, 10.0]])]
    chosen = cnn_criteria.ScoreSelection(scores, "lrp", "kernel", "epsilon").select(graph, 1 / 9)
    np.testing.assert_array_equal(chosen[0], [[True], [False], [False]])


def test_kernel_selection_removes_the_lowest_live_kernels_ties_by_layer_then_index():
    scores = [np.array([[0.3, 0.1], [0.1, 0.9]]), np.array([[0.1, 0.5]])]
    alive = [np.array([[True, True], [True, True]]), np.array([[True, False]])]
    chosen = lowest_kernels(scores, alive, 0.6)                 # 3 of the 5 live kernels
    np.testing.assert_array_equal(chosen[0], [[False, True], [True, False]])
    np.testing.assert_array_equal(chosen[1], [[True, False]])


def test_filter_selection_removes_whole_filters_until_their_kernels_reach_the_fraction():
    scores = [np.array([0.2, 0.1, 0.9]), np.array([0.15])]
    alive = [np.ones((3, 4), dtype=bool), np.array([[True, False, True]])]
    alive[0][1, :2] = False                                     # filter 1 of layer 0 has 2 live kernels
    chosen = lowest_filters(scores, alive, 0.5)                 # 12 live kernels: 6 -> filters 0.1, 0.15, 0.2
    assert [row.any() for row in chosen[0]] == [True, True, False]
    np.testing.assert_array_equal(chosen[1], alive[1])
    np.testing.assert_array_equal(chosen[0][1], alive[0][1])    # only live kernels are selected
    assert not lowest_filters(scores, alive, 0.0)[0].any()


def test_a_filter_takes_the_kernels_that_read_its_channel_with_it():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3))
    graph = trace_channel_graph(model, torch.rand(1, 1, 8, 8))
    alive = [np.ones((3, 1), dtype=bool), np.ones((4, 3), dtype=bool)]   # 15 live kernels
    scores = [np.array([0.1, 0.5, 0.6]), np.array([0.2, 0.3, 0.4, 0.7])]
    chosen = lowest_filters(scores, alive, 0.25, graph)       # 3.75: filter 0 of layer 0 (1 + 4 readers)
    assert chosen[0][:, 0].tolist() == [True, False, False] and not chosen[1].any()
    chosen = lowest_filters(scores, alive, 0.25)               # without the graph: own kernels only (1 + 3)
    assert chosen[0][:, 0].tolist() == [True, False, False] and chosen[1][0].all() and not chosen[1][1:].any()


@pytest.mark.parametrize("prefix", ["LRP", "Taylor", "Grad", "Weight"])
def test_the_generic_and_the_resnet50_methods_prune_the_same_and_keep_about_the_fraction(prefix):
    x, target = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    by_graph, traced = narrow_fcn(4, num_classes=3), narrow_fcn(4, num_classes=3)
    getattr(lean, f"{prefix}_Global_ResNet50")(by_graph, 0.6, (x, target))
    getattr(lean, f"{prefix}_Global")(traced, 0.6, x, (x, target))
    for (a, name), (b, _) in zip(pruning_utils.get_convs_ResNet50(by_graph), pruning_utils.get_convs_ResNet50(traced)):
        assert torch.equal(pruning_utils.get_mask(a, name), pruning_utils.get_mask(b, name))
    kept = 1 - pruning_utils.fraction_pruned_convs_ResNet50(by_graph)[2]
    assert 0.5 < kept <= 0.6 + 1e-9


@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_msd_steps_with_a_criterion_follow_the_schedule(granularity):
    model = random_msd(5, c_in=1, c_out=3, depth=12)
    reference = [(torch.rand(2, 1, 12, 12), torch.randint(0, 3, (2, 12, 12))) for _ in range(2)]
    for kept in (0.7, 0.4):
        lean.LRP_Global_MSD_3x3(model, kept, reference, granularity=granularity)
        assert 1 - pruning_utils.fraction_pruned_convs_MSD3x3(model)[2] <= kept + 1e-9
    assert 1 - pruning_utils.fraction_pruned_convs_MSD3x3(model)[2] > 0.25
    assert not hasattr(model.msd.final_layer.linear, "weight_mask")


def test_bad_criterion_arguments_are_errors():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="unknown criterion"):
        CriterionSelection("relevance", model, None)
    with pytest.raises(ValueError, match="unknown granularity"):
        CriterionSelection("lrp", model, None, granularity="channel")
    with pytest.raises(ValueError, match="needs reference samples"):
        CriterionSelection("taylor", model, None)
    with pytest.raises(ValueError, match="do not fit class scores"):
        lean.Grad_Global(model, 0.5, torch.rand(1, 1, 5, 5), (torch.rand(1, 1, 5, 5), torch.zeros(1, 4, 4).long()))
