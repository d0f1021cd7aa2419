"""LEAN and the individual-filter baselines, one call = one pruning step (spec: "The pruning methods").

Every method has the reference signature ``METHOD(model, tot_perc, Redun=True, verbose=False)``:
``tot_perc`` is the fraction of prunable convolutions to KEEP after this step, counted over the
whole model, earlier steps included. All methods share one step (:func:`prune_step`) and differ
only in how they choose the convolutions to prune now:
- ``LEAN_SV_*``: the longest multiplicative chains of the spectral-norm graph are kept;
- ``IndivSV_Global_*`` / ``IndivL1_Global_*``: a global threshold on per-convolution norms.
The generic ``LEAN_SV`` / ``IndivSV_Global`` / ``IndivL1_Global`` take any model and an example
input and build the graph by tracing the model (``graph_tracing``); on MS-D and FCN-ResNet50
they select exactly what the per-architecture methods select.
"""
import numpy as np
import torch

from pruning_toolkit import graph_tracing
from pruning_toolkit import norm_graph
from graph_algorithms import longest_path_prune_edges
from pruning_toolkit.masks import apply_mask, fraction_pruned, kernel_alive, masked_weight, prune_kernels
from pruning_utils import compute_FourierSVD_norms, compute_Ln_norms_conv

MSD_FOURIER_SIZE = 64
RESNET_FOURIER_SIZE = 7


# ============================================================================================
# Norms and selections
# ============================================================================================

def layer_norms(graph, norm="sv", fourier_size=MSD_FOURIER_SIZE):
    """Per-layer (out, in) float64 arrays: the spectral ('sv') or L1 ('l1') norm of each masked
    convolution, times the BatchNorm scale of its output channel where a BatchNorm follows."""
    norms = []
    for layer in graph.layers:
        weight = masked_weight(layer.module, layer.name)
        if norm == "sv":
            values = compute_FourierSVD_norms(weight, fourier_size, "max")
        elif norm == "l1":
            values = compute_Ln_norms_conv(weight, 1)
        else:
            raise ValueError(f"unknown norm {norm!r}, expected 'sv' or 'l1'")
        values = values.double().cpu().numpy()
        if not np.isfinite(values).all():
            raise ValueError(f"convolution {layer.name} of {type(layer.module).__name__} has NaN or infinite weights")
        if layer.batchnorm is not None:
            values = values * norm_graph.batchnorm_scale(layer.batchnorm)[:, None]
        norms.append(values)
    return norms


def lean_selection(graph, prune_fraction, norms):
    """Which convolutions LEAN prunes now: all but the longest chains of the norm graph."""
    sources, targets, weights, flat_indices = [], [], [], []
    for layer, values in zip(graph.layers, norms):
        flat_index = np.flatnonzero(values)  # one pass over the norms; reused for the selections
        out_index, in_index = np.divmod(flat_index, values.shape[1])
        # matrix orientation of the spec: entry [out, in] is read as an edge out -> in
        sources.append(layer.out_nodes[out_index])
        targets.append(layer.in_nodes[in_index])
        weights.append(values.ravel()[flat_index])
        flat_indices.append(flat_index)
    num_skips = len(graph.skip_edges)
    sources.append(graph.skip_edges[:, 0])
    targets.append(graph.skip_edges[:, 1])
    weights.append(np.ones(num_skips))
    num_conv_edges = sum(len(w) for w in weights) - num_skips
    is_skip = np.concatenate([np.zeros(num_conv_edges, bool), np.ones(num_skips, bool)])
    to_prune = longest_path_prune_edges(
        graph.num_nodes, np.concatenate(sources), np.concatenate(targets), np.concatenate(weights),
        prune_fraction, skip=is_skip)
    selections, start = [], 0
    for values, flat_index in zip(norms, flat_indices):
        selection = np.zeros(values.size, dtype=bool)
        selection[flat_index] = to_prune[start:start + flat_index.size]
        selections.append(selection.reshape(values.shape))
        start += flat_index.size
    return selections


def threshold_selection(prune_fraction, norms, inclusive=False):
    """Global threshold: numpy's linear percentile at ``100 * prune_fraction`` of the nonzero norms."""
    all_norms = np.concatenate([values.ravel() for values in norms])
    if not (all_norms > 0).any():
        raise ValueError("every remaining convolution has norm 0 (all-zero weights): nothing to rank")
    threshold = np.percentile(all_norms[all_norms > 0], 100 * prune_fraction)
    if inclusive:
        return [values <= threshold for values in norms]
    return [values < threshold for values in norms]


# ============================================================================================
# Dead channels
# ============================================================================================

def _channel_state(graph, alive=None):
    """(all_inputs_pruned, dead) bool arrays over nodes.

    A channel whose incoming convolutions are all pruned has its bias / BatchNorm pruned; it is
    dead (its outgoing convolutions carry nothing) unless a skip edge brings a live channel into it.
    ``alive``: the layers' ``kernel_alive`` arrays when the caller already has them.
    """
    if alive is None:
        alive = [kernel_alive(layer) for layer in graph.layers]
    has_conv_input = np.zeros(graph.num_nodes, dtype=bool)
    live_conv_input = np.zeros(graph.num_nodes, dtype=bool)
    for layer, layer_alive in zip(graph.layers, alive):
        has_conv_input[layer.out_nodes] = True
        live_conv_input[layer.out_nodes] |= layer_alive.any(axis=1)
    all_inputs_pruned = has_conv_input & ~live_conv_input
    dead = all_inputs_pruned.copy()
    skip_into, skip_from = graph.skip_edges[:, 0], graph.skip_edges[:, 1]
    while True:
        revived = dead[skip_into] & ~dead[skip_from]
        if not revived.any():
            return all_inputs_pruned, dead
        dead[skip_into[revived]] = False


def prune_channel_params(graph, channels):
    """Prune the bias / BatchNorm entries of the given channels (bool array over nodes)."""
    keeps = {}
    for layer in graph.layers:
        dying = channels[layer.out_nodes]
        if not dying.any():
            continue
        for module, name, entries in layer.channel_params:
            key = (id(module), name)
            if key not in keeps:
                keeps[key] = (module, name, torch.ones(getattr(module, name).shape, dtype=torch.bool))
            keeps[key][2][entries[dying]] = False
    for module, name, keep in keeps.values():
        apply_mask(module, name, keep)


def prune_dead_channel_params(graph):
    """Prune the bias / BatchNorm of every channel whose incoming convolutions are all pruned."""
    all_inputs_pruned, _ = _channel_state(graph)
    prune_channel_params(graph, all_inputs_pruned)


def prune_redundant(graph):
    """Redundancy pruning: prune the outgoing convolutions and the bias / BatchNorm of dead
    channels, until nothing changes."""
    alive = [kernel_alive(layer) for layer in graph.layers]  # read the masks once, then track them
    while True:
        all_inputs_pruned, dead = _channel_state(graph, alive)
        changed = False
        for layer, layer_alive in zip(graph.layers, alive):
            redundant = layer_alive & dead[layer.in_nodes][None, :]
            if redundant.any():
                prune_kernels(layer, redundant)
                layer_alive &= ~redundant
                changed = True
        if not changed:
            prune_channel_params(graph, all_inputs_pruned)
            return


# ============================================================================================
# One pruning step
# ============================================================================================

def _check_keep_fraction(tot_perc):
    if isinstance(tot_perc, bool) or not isinstance(tot_perc, (int, float, np.floating, np.integer)):
        raise ValueError(f"tot_perc is the fraction of convolutions to keep, a number in (0, 1], got {tot_perc!r}")
    if not 0 < tot_perc <= 1:
        raise ValueError(f"tot_perc is the fraction of convolutions to keep and must lie in (0, 1], got {tot_perc}")


def prune_step(graph, tot_perc, select, Redun=True, verbose=False, label="pruning"):
    """Prune ``graph`` so that a fraction ``tot_perc`` of its convolutions stays, in the spec's order.

    ``select(prune_fraction) -> list of (out, in) bool arrays`` chooses what to prune now; it is
    called after the optional redundancy pass, so it sees the current masks.
    """
    _check_keep_fraction(tot_perc)
    already_pruned = fraction_pruned(graph)
    if already_pruned >= 1 - tot_perc:
        if verbose:
            print(f"{label}: {already_pruned:.4f} already pruned, nothing to do for keep fraction {tot_perc}")
        return
    prune_fraction = 1 - tot_perc / (1 - already_pruned)
    pruned_before = any(hasattr(layer.module, layer.name + "_mask") for layer in graph.layers)
    if pruned_before and Redun:
        prune_redundant(graph)
    for layer, to_prune in zip(graph.layers, select(prune_fraction)):
        prune_kernels(layer, to_prune)
    if Redun:
        prune_redundant(graph)
    else:
        prune_dead_channel_params(graph)
    if verbose:
        print(f"{label}: pruned {prune_fraction:.4f} of what was left; "
              f"now {fraction_pruned(graph):.4f} of the convolutions pruned")


def _lean(graph, fourier_size, verbose=False):
    def select(fraction):
        norms = layer_norms(graph, "sv", fourier_size)
        if verbose:   # LEAN's chains need products >= 1: how many convolutions can start one
            at_least_one = sum(int((values >= 1).sum()) for values in norms)
            print(f"LEAN: {at_least_one} of {sum(int((values > 0).sum()) for values in norms)} remaining "
                  f"convolutions have a spectral norm >= 1")
        return lean_selection(graph, fraction, norms)
    return select


def _individual(graph, norm, fourier_size, inclusive=False):
    return lambda fraction: threshold_selection(fraction, layer_norms(graph, norm, fourier_size), inclusive)


# ============================================================================================
# Any model (the graph is traced)
# ============================================================================================

def LEAN_SV(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=(),
            fourier_size=MSD_FOURIER_SIZE):
    """LEAN on any traceable CNN: ``example_input`` (a tensor, or a tuple of the forward's
    tensors) is run once to build the graph; layers named in ``exclude`` (or below a module
    named there) are not pruned. ``fourier_size``: n of the spectral norms (7 reproduces the
    reference's ResNet50 choice)."""
    graph = graph_tracing.trace_channel_graph(model, example_input, exclude)
    prune_step(graph, tot_perc, _lean(graph, fourier_size, verbose), Redun, verbose, "LEAN_SV")
    return model


def IndivSV_Global(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=(),
                   fourier_size=MSD_FOURIER_SIZE, inclusive=False):
    """Global threshold on spectral norms of any traceable CNN (``inclusive``: prune norms
    equal to the threshold too, as the reference's ResNet50 variant)."""
    graph = graph_tracing.trace_channel_graph(model, example_input, exclude)
    prune_step(graph, tot_perc, _individual(graph, "sv", fourier_size, inclusive), Redun, verbose,
               "IndivSV_Global")
    return model


def IndivL1_Global(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=()):
    """Global threshold on the L1 norms of the kernels of any traceable CNN."""
    graph = graph_tracing.trace_channel_graph(model, example_input, exclude)
    prune_step(graph, tot_perc, _individual(graph, "l1", MSD_FOURIER_SIZE), Redun, verbose,
               "IndivL1_Global")
    return model


# ============================================================================================
# MS-D
# ============================================================================================

def _msd_step(model, tot_perc, Redun, verbose, label, selector, include_final_layer):
    """One step of an MS-D method: ``selector(graph)`` chooses what to prune."""
    graph = norm_graph.msd_channel_graph(model, include_final_layer=include_final_layer)
    prune_step(graph, tot_perc, selector(graph, verbose), Redun, verbose, label)
    return model


def _msd_lean(graph, verbose):
    return _lean(graph, MSD_FOURIER_SIZE, verbose)


def _msd_sv(graph, verbose):
    return _individual(graph, "sv", MSD_FOURIER_SIZE)


def _msd_l1(graph, verbose):
    return _individual(graph, "l1", MSD_FOURIER_SIZE)


def LEAN_SV_MSD(model, tot_perc, Redun=True, verbose=False):
    """LEAN on an MS-D network, final 1x1 layer included."""
    return _msd_step(model, tot_perc, Redun, verbose, "LEAN_SV_MSD", _msd_lean, include_final_layer=True)


def LEAN_SV_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    """LEAN on the 3x3 layers of an MS-D network (the paper's experiments)."""
    return _msd_step(model, tot_perc, Redun, verbose, "LEAN_SV_MSD_3x3", _msd_lean, include_final_layer=False)


def IndivSV_Global_MSD(model, tot_perc, Redun=True, verbose=False):
    return _msd_step(model, tot_perc, Redun, verbose, "IndivSV_Global_MSD", _msd_sv, include_final_layer=True)


def IndivSV_Global_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    return _msd_step(model, tot_perc, Redun, verbose, "IndivSV_Global_MSD_3x3", _msd_sv, include_final_layer=False)


def IndivL1_Global_MSD(model, tot_perc, Redun=True, verbose=False):
    return _msd_step(model, tot_perc, Redun, verbose, "IndivL1_Global_MSD", _msd_l1, include_final_layer=True)


def IndivL1_Global_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    return _msd_step(model, tot_perc, Redun, verbose, "IndivL1_Global_MSD_3x3", _msd_l1, include_final_layer=False)


def prune_biases_MSD(model):
    """Prune the bias of every MS-D channel whose incoming convolutions are all pruned."""
    prune_dead_channel_params(norm_graph.msd_channel_graph(model))


def prune_biases_MSD3x3(model):
    prune_dead_channel_params(norm_graph.msd_channel_graph(model, include_final_layer=False))


def Prune_Redundant_Convolutions_MSD(model):
    prune_redundant(norm_graph.msd_channel_graph(model))


def Prune_Redundant_Convolutions_MSD3x3(model):
    prune_redundant(norm_graph.msd_channel_graph(model, include_final_layer=False))


# ============================================================================================
# FCN-ResNet50
# ============================================================================================

def LEAN_SV_ResNet50(model, tot_perc, Redun=True, verbose=False):
    """LEAN on FCN-ResNet50: BatchNorm-scaled spectral norms (n = 7), unprunable identity skips."""
    graph = norm_graph.resnet50_channel_graph(model)
    prune_step(graph, tot_perc, _lean(graph, RESNET_FOURIER_SIZE, verbose), Redun, verbose, "LEAN_SV_ResNet50")
    return model


def IndivSV_Global_ResNet50(model, tot_perc, Redun=True, verbose=False):
    graph = norm_graph.resnet50_channel_graph(model)
    prune_step(graph, tot_perc, _individual(graph, "sv", RESNET_FOURIER_SIZE, inclusive=True), Redun, verbose,
               "IndivSV_Global_ResNet50")
    return model


def IndivL1_Global_ResNet50(model, tot_perc, Redun=True, verbose=False):
    graph = norm_graph.resnet50_channel_graph(model)
    prune_step(graph, tot_perc, _individual(graph, "l1", RESNET_FOURIER_SIZE), Redun, verbose,
               "IndivL1_Global_ResNet50")
    return model


def prune_batchnorms_ResNet50(model):
    """Prune the BatchNorm weight and bias of every channel whose incoming convolutions are all pruned."""
    prune_dead_channel_params(norm_graph.resnet50_channel_graph(model))


def Prune_Redundant_Convolutions_ResNet50(model):
    prune_redundant(norm_graph.resnet50_channel_graph(model))
