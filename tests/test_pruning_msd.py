"""LEAN and the individual-filter baselines on MS-D networks (spec: "The pruning methods")."""
import numpy as np
import pytest
import torch

import msd
from pruning_toolkit import norm_graph
import pruning_algorithms as lean
import pruning_utils
from lean_helpers import dense_lean_selection, fft_spectral_norms, kernel_kept, random_msd

pytestmark = pytest.mark.usefixtures("one_thread")


def kept_matrix(model, include_final_layer=True):
    return [kernel_kept(m, n) for m, n in pruning_utils.get_convs_MSD(model, include_final_layer)]


@pytest.mark.parametrize("include_final_layer", [True, False])
def test_lean_step_equals_dense_straightforward_extraction(include_final_layer):
    model = random_msd(3, c_in=2, c_out=2, depth=10)
    graph = norm_graph.msd_channel_graph(model, include_final_layer)
    expected_pruned = dense_lean_selection(graph, 0.6, lean.MSD_FOURIER_SIZE)
    method = lean.LEAN_SV_MSD if include_final_layer else lean.LEAN_SV_MSD_3x3
    method(model, 0.4, Redun=False)
    for kept, pruned in zip(kept_matrix(model, include_final_layer), expected_pruned):
        np.testing.assert_array_equal(kept, ~pruned)
    if not include_final_layer:
        assert not hasattr(model.msd.final_layer.linear, "weight_mask")


@pytest.mark.parametrize("method, norm", [(lean.IndivSV_Global_MSD, "sv"), (lean.IndivL1_Global_MSD, "l1")])
def test_individual_methods_apply_the_global_percentile_threshold(method, norm):
    model = random_msd(4, depth=8)
    weights = [getattr(m, n) for m, n in pruning_utils.get_convs_MSD(model)]
    if norm == "sv":
        norms = [fft_spectral_norms(w, 64) for w in weights]
    else:
        norms = [w.detach().double().abs().reshape(w.shape[0], w.shape[1], -1).sum(-1).numpy() for w in weights]
    everything = np.concatenate([v.ravel() for v in norms])
    threshold = np.percentile(everything, 100 * 0.3)
    method(model, 0.7, Redun=False)
    for kept, values in zip(kept_matrix(model), norms):
        # float32 norms against float64 ones: only exact ties with the threshold could differ
        np.testing.assert_array_equal(kept, values >= threshold)


def test_kept_fraction_follows_random_multistep_schedules():
    """The reference's check: after n steps towards a random final ratio, the kept fraction is
    within 5 % (relative) of it. The individual methods run without redundancy pruning, which
    removes dead convolutions beyond the target (see test_redundancy_*)."""
    rng = np.random.default_rng(7)
    for trial in range(2):
        c_in, c_out, depth = (int(v) for v in (rng.integers(1, 7), rng.integers(1, 7), rng.integers(30, 51)))
        final_ratio, steps = rng.uniform(0.05, 0.9), int(rng.integers(1, 5))
        for method, fraction in [(lean.LEAN_SV_MSD, lambda m: pruning_utils.fraction_pruned_convs_MSD(m)[2]),
                                 (lean.LEAN_SV_MSD_3x3, lambda m: pruning_utils.fraction_pruned_convs_MSD3x3(m)[2]),
                                 (lean.IndivSV_Global_MSD_3x3, lambda m: pruning_utils.fraction_pruned_convs_MSD3x3(m)[2]),
                                 (lean.IndivL1_Global_MSD, lambda m: pruning_utils.fraction_pruned_convs_MSD(m)[2])]:
            model = random_msd(trial, c_in, c_out, depth, dilations=range(1, 11))
            redun = method.__name__.startswith("LEAN")
            for step in range(1, steps + 1):
                method(model, final_ratio ** (step / steps), Redun=redun)
            kept = 1 - fraction(model)
            assert abs(kept - final_ratio) / final_ratio < 0.05, (method.__name__, c_in, c_out, depth, steps)


def test_a_step_that_asks_for_no_more_pruning_changes_nothing():
    model = random_msd(5)
    lean.LEAN_SV_MSD(model, 0.5)
    before = [m.clone() for m in pruning_utils.get_conv_masks_MSD(model)]
    lean.LEAN_SV_MSD(model, 0.6)
    for old, new in zip(before, pruning_utils.get_conv_masks_MSD(model)):
        assert torch.equal(old, new)
    with pytest.raises(ValueError, match="fraction of convolutions to keep"):
        lean.LEAN_SV_MSD(model, 1.5)


def kill_layer_inputs(model, layer, keep_from=()):
    """Mask every incoming convolution of MS-D layer ``layer`` except those from ``keep_from``."""
    block = model.msd.msd_block
    keep = torch.zeros_like(getattr(block, f"weight{layer}"))
    for source in keep_from:
        keep[:, source] = 1
    pruning_utils.apply_mask(block, f"weight{layer}", keep)


def test_redundancy_pruning_kills_outgoing_convolutions_and_biases_in_cascade():
    model = random_msd(6, c_in=1, c_out=2, depth=8)
    c_in = 1
    kill_layer_inputs(model, 3)                          # node c_in + 3 is dead
    kill_layer_inputs(model, 5, keep_from=[c_in + 3])    # node c_in + 5 only reads the dead node
    lean.Prune_Redundant_Convolutions_MSD(model)
    block = model.msd.msd_block
    for dead in (3, 5):
        for later in range(dead + 1, 8):
            assert not kernel_kept(block, f"weight{later}")[0, c_in + dead]
        assert not kernel_kept(model.msd.final_layer.linear, "weight")[:, c_in + dead].any()
        assert block.bias_mask[dead] == 0
    assert kernel_kept(block, "weight6")[0, c_in + 4]     # live channels keep their convolutions
    assert block.bias_mask.sum() == 8 - 2


def test_removing_dead_channels_keeps_the_outputs():
    """Once a dead channel's bias is pruned it outputs zero, so pruning its outgoing
    convolutions (redundancy pruning) cannot change the network's output (no cascade here: a
    cascade also prunes the bias of a channel that read only dead channels)."""
    model = random_msd(8, c_in=2, c_out=3, depth=9)
    kill_layer_inputs(model, 2)
    lean.prune_biases_MSD(model)
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        before = model.net(x)
    lean.Prune_Redundant_Convolutions_MSD(model)
    pruned_more = sum(int((~k).sum()) for k in kept_matrix(model))
    with torch.no_grad():
        after = model.net(x)
    assert pruned_more == 4 + (9 - 3) + 3
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_masks_survive_save_load_and_fine_tuning(tmp_path):
    model = random_msd(9, c_in=1, c_out=2, depth=6)
    lean.LEAN_SV_MSD(model, 0.3)
    path = tmp_path / "pruned.torch"
    model.save(path, epoch=3)
    loaded = msd.MSDSegmentationModel(1, 2, 6, 1, dilations=[1, 2, 3], device="cpu")
    assert loaded.load(path) == 3
    for (m1, n1), (m2, n2) in zip(pruning_utils.get_convs_MSD(model), pruning_utils.get_convs_MSD(loaded)):
        assert torch.equal(pruning_utils.get_mask(m1, n1), pruning_utils.get_mask(m2, n2))
    x = torch.randn(2, 1, 10, 10)
    target = torch.randint(0, 2, (2, 1, 10, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), model.net(x))
    for _ in range(3):
        loaded.learn(x, target)
    for module, name in pruning_utils.get_convs_MSD(loaded):
        weight = pruning_utils.masked_weight(module, name)
        assert torch.all(weight[pruning_utils.get_mask(module, name) == 0] == 0)
    assert pruning_utils.fraction_pruned_convs_MSD(loaded) == pytest.approx(pruning_utils.fraction_pruned_convs_MSD(model))


def test_reference_helpers():
    model = random_msd(10, c_in=2, c_out=3, depth=5)
    assert len(pruning_utils.get_convs_MSD(model)) == 6
    assert len(pruning_utils.get_convs_MSD(model, include_final_layer=False)) == 5
    assert not pruning_utils.pruned_before_MSD(model)
    assert pruning_utils.fraction_pruned_convs_MSD(model)[2] == 0
    kill_layer_inputs(model, 4)
    assert pruning_utils.pruned_before_MSD(model)
    convs_3x3 = sum(2 + k for k in range(5))
    assert pruning_utils.fraction_pruned_convs_MSD3x3(model) == (6, convs_3x3, pytest.approx(6 / convs_3x3))
    assert pruning_utils.fraction_pruned_convs_MSD(model) == (6, convs_3x3 + 3 * 7, pytest.approx(6 / (convs_3x3 + 3 * 7)))
