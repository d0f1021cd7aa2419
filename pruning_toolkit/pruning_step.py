"""One pruning step on a channel graph (spec "The pruning methods"), and redundancy pruning.

A step keeps a fraction of all prunable convolutions, counted over the whole model with the
earlier steps included; a :class:`selection.Selection` says which convolutions go now.
Redundancy pruning removes what can no longer carry a signal: the outgoing convolutions of dead
channels, and the bias / BatchNorm entries of channels whose inputs are all pruned.
"""
import numpy as np
import torch

from pruning_toolkit.masks import apply_mask, fraction_pruned, kernel_alive, prune_kernels


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


def _check_keep_fraction(keep_fraction):
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float, np.floating, np.integer)):
        raise ValueError(f"tot_perc is the fraction of convolutions to keep, a number in (0, 1], got {keep_fraction!r}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"tot_perc is the fraction of convolutions to keep and must lie in (0, 1], got {keep_fraction}")


def prune_step(graph, keep_fraction, selection, redundancy=True, verbose=False, label="pruning"):
    """Prune ``graph`` so that a fraction ``keep_fraction`` of its convolutions stays, in the spec's
    order: redundancy pass, ``selection.select(graph, remove_fraction)``, redundancy pass (or, with
    ``redundancy=False``, only the biases / BatchNorms of channels left without inputs)."""
    _check_keep_fraction(keep_fraction)
    already_pruned = fraction_pruned(graph)
    if already_pruned >= 1 - keep_fraction:
        if verbose:
            print(f"{label}: {already_pruned:.4f} already pruned, nothing to do for keep fraction {keep_fraction}")
        return
    remove_fraction = 1 - keep_fraction / (1 - already_pruned)
    pruned_before = any(hasattr(layer.module, layer.name + "_mask") for layer in graph.layers)
    if pruned_before and redundancy:
        prune_redundant(graph)
    for layer, to_prune in zip(graph.layers, selection.select(graph, remove_fraction)):
        prune_kernels(layer, to_prune)
    if redundancy:
        prune_redundant(graph)
    else:
        prune_dead_channel_params(graph)
    if verbose:
        print(f"{label}: pruned {remove_fraction:.4f} of what was left; "
              f"now {fraction_pruned(graph):.4f} of the convolutions pruned")
