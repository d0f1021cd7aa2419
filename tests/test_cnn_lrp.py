"""LRP through traced CNNs (cnn_lrp): conservation, a slow explicit reference, BatchNorm merging, MS-D."""
import numpy as np
import pytest
import torch
from torch import nn

import msd
from lean_helpers import narrow_fcn, random_msd
from pruning_toolkit.cnn_lrp import layer_relevance
from pruning_toolkit.graph_tracing import trace_channel_graph
from pruning_toolkit.norm_graph import msd_channel_graph, resnet50_channel_graph
from pruning_toolkit.shrinking import shrink

pytestmark = pytest.mark.usefixtures("one_thread")


class Branches(nn.Module):
    """Pooling, upsampling, a residual addition and a concatenation, no biases."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.b = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.head = nn.Conv2d(12, 3, 1, bias=False)

    def forward(self, x):
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(nn.functional.max_pool2d(a, 2)))
        b = nn.functional.interpolate(b, scale_factor=2, mode="bilinear")
        return self.head(torch.cat([a + b, nn.functional.avg_pool2d(a, 3, 1, 1)], 1))


@torch.no_grad()
def start_relevance(model, x, target):
    logits = model(x)
    logits = logits["out"] if isinstance(logits, dict) else logits
    return float((logits * nn.functional.one_hot(target, logits.shape[1]).movedim(-1, 1)).sum())


def test_relevance_is_conserved_through_pooling_upsampling_additions_and_concatenation():
    torch.manual_seed(0)
    model = Branches().eval()
    x, target = torch.rand(2, 2, 8, 8), torch.randint(0, 3, (2, 8, 8))
    layers, input_relevance = layer_relevance(model, trace_channel_graph(model, x), x, target)
    start = start_relevance(model, x, target)
    assert float(input_relevance.sum()) == pytest.approx(start, rel=1e-5)
    assert layers[2].channels.sum() == pytest.approx(start, rel=1e-5)      # the head's output
    assert layers[0].channels.sum() == pytest.approx(start, rel=1e-5)      # everything passes through a


@pytest.mark.parametrize("rule", ["zplus", "epsilon"])
def test_the_kernel_relevances_of_a_layer_sum_to_its_output_channels_relevance(rule):
    torch.manual_seed(1)
    model = Branches().eval()
    x, target = torch.rand(2, 2, 8, 8), torch.randint(0, 3, (2, 8, 8))
    layers, _ = layer_relevance(model, trace_channel_graph(model, x), x, target, rule=rule)
    for layer in layers:
        np.testing.assert_allclose(layer.kernels.sum(1), layer.channels, rtol=1e-4, atol=1e-6)


def explicit_zplus(x, weight, relevance_out, padding):
    """z+ for one 2-D convolution with loops over positions, channels and taps: (R_in, R per kernel)."""
    channels_in, height, width = x.shape
    channels_out, _, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    positive = np.maximum(weight, 0)
    relevance_in = np.zeros_like(padded)
    per_kernel = np.zeros((channels_out, channels_in))
    for o in range(channels_out):
        for r in range(height):
            for c in range(width):
                patch = padded[:, r:r + kh, c:c + kw]
                contributions = patch * positive[o]
                share = relevance_out[o, r, c] / (contributions.sum() + 1e-9)
                relevance_in[:, r:r + kh, c:c + kw] += contributions * share
                per_kernel[o] += (contributions * share).sum(axis=(1, 2))
    return relevance_in[:, padding:padding + height, padding:padding + width], per_kernel


def test_zplus_equals_a_slow_explicit_implementation():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1)).eval()
    x, target = torch.rand(1, 2, 5, 6), torch.randint(0, 4, (1, 5, 6))
    layers, input_relevance = layer_relevance(model, trace_channel_graph(model, x), x, target)
    with torch.no_grad():
        hidden = model[1](model[0](x))[0].numpy().astype(np.float64)
        logits = model(x)[0].numpy().astype(np.float64)
    start = logits * np.moveaxis(np.eye(4)[target[0].numpy()], -1, 0)
    weights = [model[i].weight.detach().numpy().astype(np.float64) for i in (0, 2)]
    relevance_hidden, kernels_2 = explicit_zplus(hidden, weights[1], start, 1)
    relevance_x, kernels_1 = explicit_zplus(x[0].numpy().astype(np.float64), weights[0], relevance_hidden, 1)
    np.testing.assert_allclose(layers[1].kernels, kernels_2, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(layers[1].channels, start.sum(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layers[0].kernels, kernels_1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(layers[0].channels, relevance_hidden.sum(axis=(1, 2)), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(input_relevance[0].numpy(), relevance_x, rtol=1e-3, atol=1e-6)


def test_a_batchnorm_is_merged_into_its_convolution_and_the_model_is_left_unchanged():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 3, 1, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2)
        model[1].running_var.uniform_(0.5, 2)
        model[1].running_mean.normal_()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1, bias=False)).eval()
    bn = model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        merged[0].weight.copy_(model[0].weight * scale[:, None, None, None])
        merged[0].bias.copy_(scale * (model[0].bias - bn.running_mean) + bn.bias)
        merged[2].weight.copy_(model[3].weight)
    x, target = torch.rand(2, 2, 6, 6), torch.randint(0, 3, (2, 6, 6))
    got, got_input = layer_relevance(model, trace_channel_graph(model, x), x, target)
    expected, expected_input = layer_relevance(merged, trace_channel_graph(merged, x), x, target)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.kernels, b.kernels, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.channels, b.channels, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_input, expected_input, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and not model.training


def bias_free_msd(seed, depth=8):
    model = random_msd(seed, c_in=1, c_out=3, depth=depth)
    with torch.no_grad():
        model.msd.msd_block.bias.zero_()
        model.msd.final_layer.linear.bias.zero_()
    return model


def test_relevance_is_conserved_through_the_msd_dense_block():
    model = bias_free_msd(4)
    x, target = torch.rand(2, 1, 12, 12) + 0.1, torch.randint(0, 3, (2, 12, 12))
    layers, input_relevance = layer_relevance(model.msd, msd_channel_graph(model), x, target)
    assert float(input_relevance.sum()) == pytest.approx(start_relevance(model.msd, x, target), rel=1e-4)
    for layer in layers:
        np.testing.assert_allclose(layer.kernels.sum(1), layer.channels, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("head", [nn.LogSoftmax(dim=1), nn.Softmax(dim=1)])
def test_relevance_starts_at_the_logits_before_a_normalising_head(head):
    torch.manual_seed(2)
    model = Branches().eval()
    x, target = torch.rand(2, 2, 8, 8), torch.randint(0, 3, (2, 8, 8))
    graph = trace_channel_graph(model, x)
    plain, plain_input = layer_relevance(model, graph, x, target)
    headed, headed_input = layer_relevance(nn.Sequential(model, head), graph, x, target)
    torch.testing.assert_close(headed_input, plain_input)
    for a, b in zip(headed, plain):
        np.testing.assert_array_equal(a.kernels, b.kernels)


def test_the_msd_network_with_its_log_softmax_is_explained_from_its_logits():
    model = bias_free_msd(6)
    x, target = torch.rand(2, 1, 12, 12) + 0.1, torch.randint(0, 3, (2, 12, 12))
    graph = msd_channel_graph(model, include_final_layer=False)
    assert isinstance(model.net[-1][-1], nn.LogSoftmax)
    whole, _ = layer_relevance(model.net, graph, x, target)
    with torch.no_grad():
        scaled = model.net[0](x)
    block, _ = layer_relevance(model.msd, graph, scaled, target)
    for a, b in zip(whole, block):
        np.testing.assert_allclose(a.kernels, b.kernels, rtol=1e-5, atol=1e-7)
    assert sum(layer.channels.sum() for layer in whole) > 0     # log-probabilities would give < 0


def test_a_shrunk_msd_block_explains_like_the_masked_one():
    model = bias_free_msd(5, depth=10)
    import pruning_algorithms as lean
    lean.LEAN_SV_MSD_3x3(model, 0.3)
    x, target = torch.rand(2, 1, 12, 12) + 0.1, torch.randint(0, 3, (2, 12, 12))
    masked, masked_input = layer_relevance(model.msd, trace_channel_graph(model.msd, x), x, target)
    small, _ = shrink(model.msd, x)
    assert isinstance(small.msd_block, msd.SparseMSDBlock2d)
    shrunk, shrunk_input = layer_relevance(small, trace_channel_graph(small, x), x, target)
    torch.testing.assert_close(shrunk_input, masked_input, rtol=1e-4, atol=1e-6)
    live = [layer for layer in masked if layer.channels.any()]
    assert sorted(np.round([l.channels.sum() for l in shrunk], 4)) == sorted(np.round([l.channels.sum() for l in live], 4))


def test_fcn_resnet50_relevance_is_conserved_layer_by_layer_with_the_epsilon_rule():
    model = narrow_fcn(6, num_classes=3)
    with torch.no_grad():                   # no biases anywhere: epsilon conserves (up to epsilon)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.zero_()
                module.running_mean.zero_()
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.zero_()
    x, target = torch.rand(1, 1, 32, 32), torch.randint(0, 3, (1, 32, 32))
    graph = resnet50_channel_graph(model)
    layers, input_relevance = layer_relevance(model, graph, x, target, rule="epsilon")
    assert len(layers) == len(graph.layers) and all(layer.channels.any() for layer in layers)
    for layer in layers:
        np.testing.assert_allclose(layer.kernels.sum(1), layer.channels, rtol=1e-3, atol=1e-5)
    assert float(input_relevance.sum()) == pytest.approx(start_relevance(model, x, target), rel=1e-3)


def test_a_layer_without_a_way_to_pass_relevance_is_an_error():
    from pruning_toolkit import layer_rules

    class Opaque(nn.Conv2d):
        pass

    class OpaqueRule(layer_rules.LayerRule):
        def trace(self, tracer, module, path, inputs, output):
            return layer_rules.ConvRule().trace(tracer, module, path, inputs, output)

    model = nn.Sequential(Opaque(1, 2, 3))
    x = torch.rand(1, 1, 5, 5)
    rules = {Opaque: OpaqueRule()}
    with pytest.raises(ValueError, match="does not say how relevance passes through it"):
        layer_relevance(model, trace_channel_graph(model, x, rules=rules), x, torch.zeros(1, 3, 3, dtype=torch.long),
                        rules=rules)
