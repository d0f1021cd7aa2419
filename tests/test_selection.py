"""The selection contract: what a pruning step removes is one object that ``prune_step`` takes."""
import numpy as np
import pytest
import torch
from torch import nn

import pruning_algorithms as lean
from lean_helpers import kernel_kept, random_msd
from pruning_toolkit import LeanChains, NormThreshold, Selection, prune_step
from pruning_toolkit.graph_tracing import trace_channel_graph
from pruning_toolkit.norm_graph import get_convs_MSD, msd_channel_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def kept(model):
    return [kernel_kept(module, name) for module, name in get_convs_MSD(model, include_final_layer=False)]


class LowestFirstInput(Selection):
    """A criterion of one's own: prune, in every layer, the kernels reading the layer's first input."""

    def __init__(self):
        self.calls = []

    def select(self, graph, remove_fraction):
        self.calls.append(remove_fraction)
        choices = []
        for layer in graph.layers:
            chosen = np.zeros((len(layer.out_nodes), len(layer.in_nodes)), dtype=bool)
            chosen[:, 0] = True
            choices.append(chosen)
        return choices


def test_a_custom_selection_prunes_what_it_selects_and_is_told_the_fraction_to_remove():
    model = random_msd(1, depth=6)
    graph = msd_channel_graph(model, include_final_layer=False)
    selection = LowestFirstInput()
    prune_step(graph, 0.8, selection, redundancy=False)
    assert selection.calls == [pytest.approx(0.2)]
    for layer_kept in kept(model):
        assert not layer_kept[:, 0].any() and layer_kept[:, 1:].all()


@pytest.mark.parametrize("selection, method", [
    (LeanChains(lean.MSD_FOURIER_SIZE), lean.LEAN_SV_MSD_3x3),
    (NormThreshold("sv", lean.MSD_FOURIER_SIZE), lean.IndivSV_Global_MSD_3x3),
    (NormThreshold("l1"), lean.IndivL1_Global_MSD_3x3),
])
def test_the_reference_methods_are_prune_step_with_their_selection(selection, method):
    by_method, by_step = random_msd(2, depth=10), random_msd(2, depth=10)
    for keep_fraction in (0.6, 0.3):
        method(by_method, keep_fraction)
        prune_step(msd_channel_graph(by_step, include_final_layer=False), keep_fraction, selection)
    for a, b in zip(kept(by_method), kept(by_step)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["l2", "SV", "fro", None])
def test_an_unknown_norm_name_is_an_error_not_a_silent_l1(bad):
    with pytest.raises(ValueError, match="unknown norm"):
        NormThreshold(bad)
    graph = trace_channel_graph(nn.Sequential(nn.Conv2d(2, 3, 3)), torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="unknown norm"):
        lean.layer_norms(graph, bad)


def test_a_selection_must_say_what_it_selects():
    model = random_msd(3, depth=4)
    with pytest.raises(NotImplementedError):
        prune_step(msd_channel_graph(model), 0.5, Selection())
