"""The traced channel graph and the generic LEAN / IndivSV / IndivL1 methods (issue #7).

The generic methods must select exactly what the hand-written MS-D and FCN-ResNet50 methods
select, step after step, ties included; on models without a hand-written method the traced
graph is compared with one written out by hand and LEAN with the dense straightforward extraction.
"""
import numpy as np
import pytest
import torch
from torch import nn

from pruning_toolkit import graph_tracing
from pruning_toolkit import norm_graph
import pruning_algorithms as lean
import pruning_utils
from lean_helpers import dense_lean_selection, narrow_fcn, random_msd, randomize_batchnorms
from tracing_models import (ResNet18Like, SmallUNet, assert_same_graph, kept_kernels, resnet18_like_graph,
                            small_unet_graph)

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_masks(graph_a, graph_b):
    for kept_a, kept_b in zip(kept_kernels(graph_a), kept_kernels(graph_b)):
        np.testing.assert_array_equal(kept_a, kept_b)


# --------------------------------------------------------------------------------------------
# The traced graph equals the hand-written ones
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("include_final_layer", [True, False])
def test_msd_graph_equals_the_hand_written_one(include_final_layer):
    model = random_msd(0, c_in=2, c_out=3, depth=9)
    exclude = () if include_final_layer else ["final_layer"]
    traced = graph_tracing.trace_channel_graph(model.msd, torch.randn(1, 2, 12, 12), exclude)
    assert_same_graph(norm_graph.msd_channel_graph(model, include_final_layer), traced)


def test_msd_graph_through_the_wrapper_net_with_the_input_scaling_excluded():
    """``model.net`` = scaling 1x1 conv, MS-D, LogSoftmax; excluding the scaling (layer "0")
    leaves its output channels as the graph's inputs, numbered like the hand-written graph."""
    model = random_msd(1, c_in=2, c_out=2, depth=6)
    traced = graph_tracing.trace_channel_graph(model.net, torch.randn(1, 2, 10, 10), ["0"])
    assert_same_graph(norm_graph.msd_channel_graph(model), traced)
    np.testing.assert_array_equal(traced.input_nodes, [0, 1])


def test_fcn_resnet_graph_equals_the_hand_written_one():
    model = narrow_fcn(0)
    traced = graph_tracing.trace_channel_graph(model, torch.randn(1, 1, 32, 32))
    assert_same_graph(norm_graph.resnet50_channel_graph(model), traced)


def test_resnet18_graph_with_projection_and_identity_skips():
    model = ResNet18Like().eval()
    traced = graph_tracing.trace_channel_graph(model, torch.randn(2, 1, 32, 32))
    assert_same_graph(resnet18_like_graph(model), traced)
    assert len(traced.skip_edges) == 2 * (4 + 6 + 8 + 10)       # one unit edge per block channel


def test_residual_main_branch_does_not_depend_on_operand_order():
    """identity + out and out + identity give the same graph: the deeper operand is the main branch."""
    torch.manual_seed(0)
    model = ResNet18Like(identity_first=True).eval()
    traced = graph_tracing.trace_channel_graph(model, torch.randn(1, 1, 32, 32))
    assert_same_graph(resnet18_like_graph(model), traced)


def test_sum_of_two_equally_deep_branches_takes_the_left_operand_as_main_branch():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.left, self.right = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.head(self.left(x) + self.right(x))

    graph = graph_tracing.trace_channel_graph(TwoBranches(), torch.randn(1, 2, 8, 8))
    left, right, head = graph.layers
    np.testing.assert_array_equal(head.in_nodes, left.out_nodes)
    np.testing.assert_array_equal(graph.skip_edges, np.stack([left.out_nodes, right.out_nodes], 1))


def test_unet_graph_offsets_concatenated_channels():
    model = SmallUNet().eval()
    traced = graph_tracing.trace_channel_graph(model, torch.randn(1, 1, 16, 16))
    expected = small_unet_graph(model)
    assert_same_graph(expected, traced)
    dec2 = traced.layers[6]
    assert len(dec2.in_nodes) == 8 + 6 and dec2.module is model.dec2[0]


# --------------------------------------------------------------------------------------------
# The generic methods select what the hand-written ones select
# --------------------------------------------------------------------------------------------

MSD_CASES = [
    (lean.LEAN_SV_MSD, lambda m, p, x: lean.LEAN_SV(m.msd, p, x), True),
    (lean.LEAN_SV_MSD_3x3, lambda m, p, x: lean.LEAN_SV(m.msd, p, x, exclude=["final_layer.linear"]), False),
    (lean.IndivSV_Global_MSD, lambda m, p, x: lean.IndivSV_Global(m.msd, p, x), True),
    (lean.IndivL1_Global_MSD_3x3, lambda m, p, x: lean.IndivL1_Global(m.msd, p, x, exclude=["final_layer"]), False),
]


@pytest.mark.parametrize("hand_written, generic, include_final_layer", MSD_CASES)
def test_generic_methods_equal_the_msd_methods_step_after_step(hand_written, generic, include_final_layer):
    x = torch.randn(1, 2, 12, 12)
    reference, model = random_msd(5, c_in=2, c_out=2, depth=14), random_msd(5, c_in=2, c_out=2, depth=14)
    for kept in (0.6, 0.35, 0.15):
        hand_written(reference, kept)
        generic(model, kept, x)
        assert_same_masks(norm_graph.msd_channel_graph(reference, include_final_layer),
                          norm_graph.msd_channel_graph(model, include_final_layer))
    biases = [pruning_utils.get_mask(m.msd.msd_block, "bias") for m in (reference, model)]
    assert torch.equal(*biases)


def test_generic_lean_through_the_wrapper_net_equals_lean_sv_msd():
    x = torch.randn(1, 1, 10, 10)
    reference, model = random_msd(6, c_in=1, c_out=2, depth=10), random_msd(6, c_in=1, c_out=2, depth=10)
    for kept in (0.5, 0.2):
        lean.LEAN_SV_MSD(reference, kept)
        lean.LEAN_SV(model.net, kept, x, exclude=["0"])
    assert_same_masks(norm_graph.msd_channel_graph(reference), norm_graph.msd_channel_graph(model))
    assert not hasattr(model.scale_in, "weight_mask")


FCN_CASES = [
    (lean.LEAN_SV_ResNet50, lambda m, p, x: lean.LEAN_SV(m, p, x, fourier_size=7)),
    (lean.IndivSV_Global_ResNet50, lambda m, p, x: lean.IndivSV_Global(m, p, x, fourier_size=7, inclusive=True)),
    (lean.IndivL1_Global_ResNet50, lambda m, p, x: lean.IndivL1_Global(m, p, x)),
]


@pytest.mark.parametrize("hand_written, generic", FCN_CASES)
def test_generic_methods_equal_the_resnet50_methods_step_after_step(hand_written, generic):
    x = torch.randn(1, 1, 32, 32)
    reference, model = narrow_fcn(7), narrow_fcn(7)
    for kept in (0.5, 0.25, 0.1):
        hand_written(reference, kept)
        generic(model, kept, x)
        assert_same_masks(norm_graph.resnet50_channel_graph(reference), norm_graph.resnet50_channel_graph(model))
    for bn_a, bn_b in zip(*[[m for m in net.modules() if isinstance(m, nn.BatchNorm2d)] for net in (reference, model)]):
        assert torch.equal(getattr(bn_a, "weight_mask", bn_a.weight), getattr(bn_b, "weight_mask", bn_b.weight))


@pytest.mark.parametrize("make_model, expected_graph", [(ResNet18Like, resnet18_like_graph),
                                                        (SmallUNet, small_unet_graph)])
def test_lean_on_traced_models_equals_the_dense_straightforward_extraction(make_model, expected_graph):
    torch.manual_seed(3)
    model = make_model().eval()
    randomize_batchnorms(model, 3)
    graph = expected_graph(model)
    expected_pruned = dense_lean_selection(graph, 0.6, 16)
    lean.LEAN_SV(model, 0.4, torch.randn(1, 1, 32, 32), Redun=False, fourier_size=16)
    for kept, pruned in zip(kept_kernels(graph), expected_pruned):
        np.testing.assert_array_equal(kept, ~pruned)


# --------------------------------------------------------------------------------------------
# Exclusion by name
# --------------------------------------------------------------------------------------------

def test_excluded_layers_and_everything_below_an_excluded_module_stay_unpruned():
    model = narrow_fcn(8)
    x = torch.randn(1, 1, 32, 32)
    lean.LEAN_SV(model, 0.3, x, Redun=False, exclude=["backbone.layer4", "classifier.4"], fourier_size=7)
    untouched = list(model.backbone.layer4.modules()) + [model.classifier[4]]
    assert not any(hasattr(m, "weight_mask") for m in untouched)
    assert hasattr(model.classifier[0], "weight_mask")
    assert any(hasattr(m, "weight_mask") for m in model.backbone.layer3.modules())
    graph = graph_tracing.trace_channel_graph(model, x, exclude=["backbone.layer4", "classifier.4"])
    kept = sum(int(k.sum()) for k in kept_kernels(graph))
    assert kept / graph.num_convolutions == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("exclude, message", [(["backbone.layer9"], "no prunable layer is named 'backbone.layer9'"),
                                              ("classifier", "list of layer names")])
def test_unknown_exclusions_are_errors(exclude, message):
    with pytest.raises(ValueError, match=message):
        graph_tracing.trace_channel_graph(narrow_fcn(9), torch.randn(1, 1, 32, 32), exclude)


# --------------------------------------------------------------------------------------------
# What the tracer does not understand
# --------------------------------------------------------------------------------------------

class ChannelShuffle(nn.Module):
    def forward(self, x):
        batch, channels, height, width = x.shape
        return x.view(batch, 2, channels // 2, height, width).transpose(1, 2).reshape(batch, channels, height, width)


class ChannelMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return torch.einsum("oc,bchw->bohw", self.mix, x)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class PreBatchNorm(nn.Module):
    """BN-ReLU-Conv (pre-activation): the BatchNorm does not follow a convolution."""

    def __init__(self):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv(torch.relu(self.bn(x)))


class BatchNormAndRawOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.other = nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y), self.other(y)


def conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(conv(4, 4), nn.Conv2d(4, 4, 3, padding=1, groups=2)), r"Conv2d '1' has groups=2"),
    (nn.Sequential(conv(4, 4), ChannelShuffle(), conv(4, 2)),
     r"Conv2d '2' reads a tensor whose channels were mixed or reordered by view in module '1' \(ChannelShuffle\)"),
    (nn.Sequential(conv(4, 4), ChannelMix(), conv(4, 2)), r"einsum in module '1' \(ChannelMix\)"),
    (nn.Sequential(conv(4, 4), nn.Flatten(), nn.Unflatten(1, (4, 8, 8)), conv(4, 2)), r"flatten in module '1'"),
    (Shared(), "'conv' runs more than once"),
    (nn.Sequential(conv(4, 4), nn.ConvTranspose2d(4, 2, 2, stride=2)), r"conv_transpose2d in module '1'"),
    (nn.Sequential(nn.ReLU(), nn.Linear(8, 3)), "found no prunable layer"),
    (PreBatchNorm(), "BatchNorm2d 'bn' does not follow a convolution"),
    (BatchNormAndRawOutput(), "reads channels from before a residual addition or BatchNorm merged them"),
])
def test_operations_the_graph_cannot_hold_are_errors_naming_op_and_module(model, message):
    with pytest.raises(ValueError, match=message):
        graph_tracing.trace_channel_graph(model, torch.randn(1, 4, 8, 8))


def test_unknown_operations_after_the_last_convolution_end_the_graph():
    """A classifier head (flatten + Linear) or a final sigmoid is not pruned and ends the graph."""
    model = ResNet18Like()
    graph = graph_tracing.trace_channel_graph(model, torch.randn(1, 1, 32, 32))
    assert model.fc not in [layer.module for layer in graph.layers]
    network = graph_tracing.trace(nn.Sequential(conv(2, 3), nn.Sigmoid()), torch.randn(1, 2, 6, 6))
    assert network.protected.tolist() == [True] * 5                 # inputs, and what the sigmoid reads


def test_tracing_leaves_the_model_as_it_was():
    model = SmallUNet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    graph_tracing.trace(model, torch.randn(2, 1, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key               # BatchNorm statistics untouched


def test_bad_example_inputs_and_models_are_clear_errors():
    with pytest.raises(ValueError, match="example_input must be a tensor"):
        graph_tracing.trace(SmallUNet(), [[1, 2]])
    with pytest.raises(ValueError, match="needs a torch.nn.Module"):
        graph_tracing.trace(random_msd(0), torch.randn(1, 2, 8, 8))
