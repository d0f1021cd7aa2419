"""Shrinking pruned models physically: same outputs, fewer parameters and MACs (issue #7)."""
import pytest
import torch
from torch import nn

import fcn_resnet
from pruning_toolkit import graph_tracing
import msd
import pruning_algorithms as lean
import pruning_utils
from lean_helpers import NARROW, conv_macs_by_hooks, random_msd, randomize_batchnorms
from pruning_toolkit import layer_rules
from msd import SparseMSDBlock2d
from pruning_toolkit.shrinking import count_parameters, shrink
from tracing_models import ResNet18Like, SmallUNet

pytestmark = pytest.mark.usefixtures("one_thread")


def outputs(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    return out["out"] if isinstance(out, dict) else out


def test_hand_computed_case_removes_exactly_the_dead_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 3, 3, padding=1))
    keep = torch.ones(5, dtype=torch.bool)
    keep[[1, 3]] = False
    pruning_utils.apply_mask(model[0], "weight", keep[:, None, None, None].expand(5, 2, 3, 3))
    pruning_utils.apply_mask(model[0], "bias", keep)
    x = torch.randn(2, 2, 9, 9)
    shrunk, report = shrink(model, x)
    assert (shrunk[0].out_channels, shrunk[2].in_channels) == (3, 3)
    assert shrunk[0].weight.shape == (3, 2, 3, 3) and shrunk[2].weight.shape == (3, 3, 3, 3)
    assert (report.params_before, report.params_after) == (5 * 2 * 9 + 5 + 3 * 5 * 9 + 3, 3 * 2 * 9 + 3 + 3 * 3 * 9 + 3)
    assert (report.macs_before, report.macs_after) == (2 * 81 * (90 + 135), 2 * 81 * (54 + 81))
    assert (report.channels_before, report.channels_after) == (8, 6)
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x))
    assert model[0].weight.shape == (5, 2, 3, 3)                    # the original is untouched


def test_a_channel_with_a_live_bias_or_batchnorm_offset_is_kept():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Conv2d(3, 2, 1))
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].weight[2] = 0
        model[1].bias.copy_(torch.tensor([0.5, 0.7, 0.0]))   # channel 1: constant 0.7; channel 2: zero
    x = torch.randn(1, 1, 6, 6)
    shrunk, report = shrink(model, x)
    assert shrunk[0].out_channels == 2 and shrunk[1].num_features == 2
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x))


def test_output_channels_keep_their_shape_even_when_dead():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    pruning_utils.apply_mask(model[2], "weight", torch.zeros(3, 4, 1, 1))
    pruning_utils.apply_mask(model[2], "bias", torch.zeros(3))
    x = torch.randn(1, 2, 5, 5)
    shrunk, _ = shrink(model, x)
    assert outputs(shrunk, x).shape == (1, 3, 5, 5)


def test_fcn_resnet_after_lean_is_smaller_with_identical_outputs():
    torch.manual_seed(1)
    model = fcn_resnet.fcn_resnet50(3, 1, **NARROW).eval()
    randomize_batchnorms(model, 1)
    x = torch.randn(2, 1, 32, 32)
    for kept in (0.3, 0.1):
        lean.LEAN_SV(model, kept, x, fourier_size=7)
    shrunk, report = shrink(model, x)
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    assert report.params_after < 0.5 * report.params_before
    assert report.params_after == count_parameters(shrunk)
    assert report.macs_before == conv_macs_by_hooks(model, x)
    assert report.macs_after == conv_macs_by_hooks(shrunk, x) < report.macs_before
    # a residual slot is removed only when dead in every branch: block outputs stay equal in width
    for stage in (shrunk.backbone.layer1, shrunk.backbone.layer2, shrunk.backbone.layer3):
        widths = {block.conv3.out_channels for block in stage} | {block.bn3.num_features for block in stage}
        assert len(widths) == 1 and stage[1].conv1.in_channels in widths


def test_baked_masks_give_plain_weights_with_the_same_outputs_and_zeros_where_pruned():
    torch.manual_seed(2)
    model = fcn_resnet.fcn_resnet50(3, 1, **NARROW).eval()
    randomize_batchnorms(model, 2)
    x = torch.randn(1, 1, 32, 32)
    lean.LEAN_SV(model, 0.3, x, fourier_size=7)
    masked, _ = shrink(model, x)
    baked, report = shrink(model, x, keep_masks=False)
    assert any(name.endswith("_mask") for name, _ in masked.named_buffers())
    assert not any(name.endswith(("_mask", "_orig")) for name, _ in baked.named_buffers())
    assert not any(name.endswith("_orig") for name, _ in baked.named_parameters())
    baked_parameters = dict(baked.named_parameters())
    for buffer_name, _ in masked.named_buffers():
        if buffer_name.endswith("_mask"):
            module_name, _, mask_name = buffer_name.rpartition(".")
            name = f"{module_name}.{mask_name[:-len('_mask')]}"
            masked_weight = getattr(masked.get_submodule(module_name), mask_name[:-len("_mask")])
            torch.testing.assert_close(baked_parameters[name], masked_weight.detach())
    torch.testing.assert_close(outputs(baked, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    assert report.params_after == count_parameters(baked)


def test_residual_channel_dead_in_the_main_branch_but_live_in_the_identity_is_kept():
    torch.manual_seed(2)
    model = ResNet18Like().eval()
    block = model.layer1[1]
    keep = torch.ones_like(block.conv2.weight)
    keep[2] = 0
    pruning_utils.apply_mask(block.conv2, "weight", keep)
    x = torch.randn(2, 1, 32, 32)
    lean.prune_redundant(graph_tracing.trace_channel_graph(model, x))
    assert block.bn2.weight_mask[2] == 0                          # the channel's own output is zero
    shrunk, report = shrink(model, x)
    assert shrunk.layer1[1].conv2.out_channels == 4               # slot 2 is live through the skip
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x))


@pytest.mark.parametrize("make_model", [ResNet18Like, SmallUNet])
def test_traced_models_shrink_with_identical_outputs(make_model):
    torch.manual_seed(3)
    model = make_model().eval()
    randomize_batchnorms(model, 3)
    x = torch.randn(2, 1, 32, 32)
    for kept in (0.4, 0.15):
        lean.LEAN_SV(model, kept, x)
    shrunk, report = shrink(model, x)
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    assert report.macs_after == conv_macs_by_hooks(shrunk, x) < report.macs_before
    assert report.channels_after < report.channels_before


def test_sparse_msd_block_with_full_connectivity_equals_the_msd_block():
    torch.manual_seed(4)
    block = msd.MSDBlock2d(2, [1, 3, 2, 5], width=2)
    sparse = SparseMSDBlock2d(2, [1, 3, 2, 5], [list(range(2 + 2 * k)) for k in range(4)], width=2)
    with torch.no_grad():
        sparse.bias.copy_(block.bias.normal_())
        for k in range(4):
            getattr(sparse, f"weight{k}").copy_(getattr(block, f"weight{k}"))
    x = torch.randn(2, 2, 9, 11)
    torch.testing.assert_close(outputs(sparse, x), outputs(block, x))
    with pytest.raises(ValueError, match="not an earlier one"):
        SparseMSDBlock2d(1, [1, 2], [[0], [0, 2]])


def test_msd_shrinks_to_a_sparse_block_of_live_layers_reading_live_inputs_only():
    model = random_msd(4, c_in=1, c_out=2, depth=12, dilations=(1, 2, 3, 4))
    block = model.msd.msd_block
    for layer in (3, 7):                                           # kill two layers' inputs
        pruning_utils.apply_mask(block, f"weight{layer}", torch.zeros_like(getattr(block, f"weight{layer}")))
    keep = torch.ones_like(block.weight10)
    keep[:, [0, 2, 5]] = 0                                         # and three convolutions of layer 10
    pruning_utils.apply_mask(block, "weight10", keep)
    x = torch.randn(2, 1, 12, 12)
    lean.prune_redundant(graph_tracing.trace_channel_graph(model.msd, x))   # masks the dead layers' biases
    shrunk, report = shrink(model.msd, x)
    small = shrunk.msd_block
    assert isinstance(small, SparseMSDBlock2d) and small.depth == 10
    assert small.dilations == [1, 2, 3, 1, 2, 3, 1, 2, 3, 4]      # layers 3 and 7 (dilation 4) are gone
    # channel list before: [x, l0..l11]; after: [x, l0, l1, l2, l4, l5, l6, l8, l9, l10, l11]
    assert small.layer_inputs[4] == [0, 1, 2, 3, 4]                # layer 5 reads x, l0, l1, l2, l4 (l3 is dead)
    assert small.layer_inputs[8] == [1, 3, 5, 6, 7, 8]             # layer 10: l0 l2 l5 l6 l8 l9 (x l1 l4 pruned)
    assert small.weight8.shape == (1, 6, 3, 3) and small.bias.shape == (10,)
    assert shrunk.final_layer.linear.weight.shape == (2, 1 + 10, 1)
    expected = outputs(model.msd, x)      # N(0, 1) weights: outputs up to ~1e3, float32 sums
    torch.testing.assert_close(outputs(shrunk, x), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    reads = sum(len(inputs) for inputs in small.layer_inputs)
    assert report.macs_after == reads * 9 * 2 * 144 + 2 * 11 * 2 * 144 < report.macs_before
    # shrinking again changes nothing, and the sparse block trains
    again, report_again = shrink(shrunk, x)
    assert report_again.macs_after == report.macs_after
    loss = again(x).square().mean()
    loss.backward()
    assert again.msd_block.weight8.grad is not None and again.msd_block.weight8.grad.abs().sum() > 0


def test_shrink_refuses_a_model_whose_outputs_would_change():
    class HardCoded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(y) + torch.full((1, 2, 1, 1), float(y.shape[1]))

    model = HardCoded()
    pruning_utils.apply_mask(model.conv, "weight", torch.zeros(4, 1, 3, 3).index_fill_(0, torch.tensor([0]), 1))
    pruning_utils.apply_mask(model.conv, "bias", torch.tensor([1.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="outputs differ"):
        shrink(model, torch.randn(1, 1, 6, 6))


class ScaledConv(nn.Module):
    """A user's own convolution layer (weight read at forward time, no Conv2d module)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.scale = 0.5

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight * self.scale, padding=1)


class ScaledConvRule(layer_rules.LayerRule):
    def trace(self, tracer, module, path, inputs, output):
        source = tracer.single_input(inputs, module, path)
        traced = tracer.add_layer(module, "weight", source, path, output)
        tracer.record(self, module, path, traced)
        return tracer.layer_output(traced, source)


class ShrinkableScaledConvRule(ScaledConvRule):
    """The same channel rule, with the surgery of a convolution: one object per layer type."""

    restrict = layer_rules.ConvRule.restrict
    cut = layer_rules.ConvRule.cut


def test_a_registered_rule_and_surgery_make_a_custom_layer_prunable_and_shrinkable():
    torch.manual_seed(5)
    model = nn.Sequential(ScaledConv(2, 6), nn.ReLU(), ScaledConv(6, 3))
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"conv2d in module '0' \(ScaledConv\) is a convolution or BatchNorm outside"):
        graph_tracing.trace_channel_graph(model, x)
    rules = {ScaledConv: ScaledConvRule()}          # for this call only: no global state
    graph = graph_tracing.trace_channel_graph(model, x, rules=rules)
    assert [len(layer.out_nodes) for layer in graph.layers] == [6, 3] and graph.num_nodes == 2 + 6 + 3
    keep = torch.ones(6, 2, 3, 3)
    keep[[0, 4]] = 0
    pruning_utils.apply_mask(model[0], "weight", keep)
    with pytest.raises(ValueError, match="no surgery is registered for ScaledConv"):
        shrink(model, x, rules=rules)
    shrunk, report = shrink(model, x, rules={ScaledConv: ShrinkableScaledConvRule()})
    assert shrunk[0].weight.shape == (4, 2, 3, 3) and shrunk[2].weight.shape == (3, 4, 3, 3)
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x))


def test_a_model_that_has_just_been_trained_shrinks():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    x = torch.rand(1, 1, 8, 8)
    lean.LEAN_SV(model, 0.5, x)
    model(x).sum().backward()              # the masked weights are now non-leaf tensors
    shrunk, _ = shrink(model, x)
    torch.testing.assert_close(outputs(shrunk, x), outputs(model, x))
