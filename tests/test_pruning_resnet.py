"""LEAN and the baselines on FCN-ResNet50 (a narrow network of the same layout keeps them fast)."""
import numpy as np
import pytest
import torch

import fcn_resnet
from pruning_toolkit import norm_graph
import pruning_algorithms as lean
import pruning_utils
from lean_helpers import NARROW, dense_lean_selection, kernel_kept, narrow_fcn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_graph_numbers_channels_in_network_order_with_identity_and_downsample_skips():
    model = narrow_fcn(0)
    graph = norm_graph.resnet50_channel_graph(model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [layer.module for layer in graph.layers] == convs    # registration order = network order
    assert graph.num_nodes == 1 + sum(c.out_channels for c in convs)
    first_block = model.backbone.layer1[0]
    by_module = {id(layer.module): layer for layer in graph.layers}
    stem = by_module[id(model.backbone.conv1)]
    np.testing.assert_array_equal(by_module[id(first_block.conv1)].in_nodes, stem.out_nodes)
    np.testing.assert_array_equal(by_module[id(first_block.downsample[0])].in_nodes, stem.out_nodes)
    second_block = model.backbone.layer1[1]
    block_output = by_module[id(first_block.conv3)].out_nodes
    np.testing.assert_array_equal(by_module[id(second_block.conv1)].in_nodes, block_output)
    skips = {tuple(edge) for edge in graph.skip_edges.tolist()}
    downsample_nodes = by_module[id(first_block.downsample[0])].out_nodes
    assert set(zip(block_output.tolist(), downsample_nodes.tolist())) <= skips       # projection skip
    second_output = by_module[id(second_block.conv3)].out_nodes
    assert set(zip(second_output.tolist(), block_output.tolist())) <= skips          # identity skip
    blocks = sum(NARROW["blocks_per_layer"])
    assert len(skips) == sum(len(by_module[id(b.conv3)].out_nodes)
                             for layer in (model.backbone.layer1, model.backbone.layer2,
                                           model.backbone.layer3, model.backbone.layer4) for b in layer)
    assert blocks == 7
    assert by_module[id(model.classifier[4])].batchnorm is None


def test_lean_step_equals_dense_straightforward_extraction_with_bn_and_skips():
    model = narrow_fcn(1)
    graph = norm_graph.resnet50_channel_graph(model)
    expected_pruned = dense_lean_selection(graph, 0.7, lean.RESNET_FOURIER_SIZE)
    lean.LEAN_SV_ResNet50(model, 0.3, Redun=False)
    for layer, pruned in zip(graph.layers, expected_pruned):
        np.testing.assert_array_equal(kernel_kept(layer.module, "weight"), ~pruned)


@pytest.mark.parametrize("method", [lean.LEAN_SV_ResNet50, lean.IndivSV_Global_ResNet50,
                                    lean.IndivL1_Global_ResNet50])
def test_kept_fraction_within_five_percent_and_model_still_runs(method):
    """Without redundancy pruning each step hits its target; redundancy pruning then removes
    the convolutions of dead channels on top (a large share in a network this narrow)."""
    model = narrow_fcn(2)
    final_ratio, steps = 0.2, 3
    for step in range(1, steps + 1):
        method(model, final_ratio ** (step / steps), Redun=False)
    kept = 1 - pruning_utils.fraction_pruned_convs_ResNet50(model)[2]
    assert abs(kept - final_ratio) / final_ratio < 0.05
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32))["out"]
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_channel_with_all_inputs_pruned_loses_its_batchnorm():
    model = narrow_fcn(3)
    block = model.backbone.layer2[1]
    keep = torch.ones_like(block.conv2.weight)
    keep[2] = 0                                   # every convolution into conv2's channel 2
    pruning_utils.apply_mask(block.conv2, "weight", keep)
    lean.prune_batchnorms_ResNet50(model)
    assert block.bn2.weight_mask[2] == 0 and block.bn2.bias_mask[2] == 0
    assert block.bn2.weight_mask.sum() == block.bn2.num_features - 1
    lean.Prune_Redundant_Convolutions_ResNet50(model)
    assert not kernel_kept(block.conv3, "weight")[:, 2].any()    # its outgoing convolutions die


def test_a_block_output_channel_fed_by_a_live_skip_is_not_dead():
    """conv3's channel c with every incoming convolution pruned still carries the identity of
    the block input: its BatchNorm goes, but the next block keeps reading it."""
    model = narrow_fcn(4)
    block, next_block = model.backbone.layer1[1], model.backbone.layer2[0]
    keep = torch.ones_like(block.conv3.weight)
    keep[5] = 0
    pruning_utils.apply_mask(block.conv3, "weight", keep)
    lean.Prune_Redundant_Convolutions_ResNet50(model)
    assert block.bn3.weight_mask[5] == 0
    assert kernel_kept(next_block.conv1, "weight")[:, 5].all()
    assert kernel_kept(next_block.downsample[0], "weight")[:, 5].all()


def test_reference_helpers_for_resnet50():
    model = fcn_resnet.fcn_resnet50(5, 1)
    convs = pruning_utils.get_convs_ResNet50(model)
    assert len(convs) == 1 + 3 * 16 + 4 + 2          # stem, 16 bottlenecks, 4 downsamples, head
    graph = norm_graph.resnet50_channel_graph(model)
    assert graph.num_nodes == 27078
    assert graph.num_convolutions == pytest.approx(14.44e6, rel=0.01)
    batchnorms = pruning_utils.get_batchnorms_ResNet50(model)
    assert batchnorms[-1] is None and all(bn is not None for bn in batchnorms[:-1])
    assert not pruning_utils.pruned_before_ResNet50(model)
    assert pruning_utils.fraction_pruned_convs_ResNet50(model)[2] == 0
