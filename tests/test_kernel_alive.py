"""kernel_alive: which (out, in) convolutions still have a nonzero mask, before and after pruning."""
import numpy as np
import torch

from pruning_toolkit import norm_graph
import pruning_utils
from lean_helpers import narrow_fcn


def straightforward_alive(layer):
    mask = pruning_utils.get_mask(layer.module, layer.name)
    return np.array([[bool(mask[o, i].any()) for i in range(mask.shape[1])] for o in range(mask.shape[0])])


def test_kernel_alive_without_mask_is_all_true_and_follows_pruning():
    graph = norm_graph.resnet50_channel_graph(narrow_fcn(0))
    layer = graph.layers[1]
    weight = getattr(layer.module, layer.name)
    alive = pruning_utils.kernel_alive(layer)
    assert alive.shape == tuple(weight.shape[:2]) and alive.dtype == bool and alive.all()
    to_prune = np.random.default_rng(0).random(alive.shape) < 0.4
    pruning_utils.prune_kernels(layer, to_prune)
    alive = pruning_utils.kernel_alive(layer)
    assert (alive == ~to_prune).all()
    assert (alive == straightforward_alive(layer)).all()
    with torch.no_grad():
        getattr(layer.module, layer.name + "_mask")[0, 0, 0] = 0  # one kernel entry only: still alive
    assert (pruning_utils.kernel_alive(layer) == straightforward_alive(layer)).all()
