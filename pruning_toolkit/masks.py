"""Pruning masks in torch.nn.utils.prune's layout (``<name>_orig`` parameter, ``<name>_mask``
buffer): reading, applying and counting them, and re-creating them when a checkpoint is loaded."""
import copy

import numpy as np
import torch
from torch.nn.utils import prune


def default_mask(module, name):
    """An all-ones mask shaped like ``module.<name>``: nothing pruned."""
    return torch.ones_like(getattr(module, name))


def is_pruned(module, name):
    return hasattr(module, name + "_mask")


def get_mask(module, name):
    """The pruning mask of ``module.<name>``, all ones where it was never pruned."""
    if is_pruned(module, name):
        return getattr(module, name + "_mask")
    return default_mask(module, name)


@torch.no_grad()
def masked_weight(module, name):
    """``<name>_orig * <name>_mask`` (the weight the next forward pass will use), detached."""
    if is_pruned(module, name):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name).detach()


@torch.no_grad()
def apply_mask(module, name, keep):
    """AND ``keep`` into the mask of ``module.<name>``, creating torch.nn.utils.prune state if needed."""
    if is_pruned(module, name):
        mask = getattr(module, name + "_mask")
        mask.mul_(keep.to(dtype=mask.dtype, device=mask.device))
        setattr(module, name, getattr(module, name + "_orig") * mask)
    else:
        weight = getattr(module, name)
        prune.custom_from_mask(module, name, keep.to(dtype=weight.dtype, device=weight.device))


def kernel_alive(layer):
    """(out, in) bool array: which convolutions of a graph layer still have a nonzero mask."""
    if not is_pruned(layer.module, layer.name):  # no mask yet: every convolution is alive
        weight = getattr(layer.module, layer.name)
        return np.ones((weight.shape[0], weight.shape[1]), dtype=bool)
    mask = get_mask(layer.module, layer.name)
    return mask.reshape(mask.shape[0], mask.shape[1], -1).any(dim=2).cpu().numpy()


def prune_kernels(layer, to_prune):
    """Mask the convolutions ``weight[o, i]`` where the (out, in) bool array ``to_prune`` is set."""
    if not np.any(to_prune):
        return
    weight = getattr(layer.module, layer.name)
    keep = torch.from_numpy(~np.asarray(to_prune)).to(weight.device)
    keep = keep.reshape(keep.shape + (1,) * (weight.dim() - 2)).expand_as(weight)
    apply_mask(layer.module, layer.name, keep)


def pruned_counts(graph):
    """(pruned, total, fraction): how many of the graph's convolutions have an all-zero kernel mask."""
    pruned = sum(int((~kernel_alive(layer)).sum()) for layer in graph.layers)
    return pruned, graph.num_convolutions, pruned / graph.num_convolutions


def fraction_pruned(graph):
    """Fraction of the graph's convolutions whose whole kernel mask is zero."""
    return pruned_counts(graph)[2]


def match_pruning(net, state_dict):
    """Make ``net``'s pruning reparametrisation match ``state_dict`` before loading it: make
    pruning permanent where the checkpoint has the plain ``name``, and add a mask where it has
    ``name_orig``/``name_mask``; ValueError when a checkpoint has one without the other."""
    modules = dict(net.named_modules())
    for module_name, module in modules.items():
        prefix = f"{module_name}." if module_name else ""
        pruned = [name[:-len("_orig")] for name, _ in module.named_parameters(recurse=False)
                  if name.endswith("_orig")]
        for name in pruned:
            if prefix + name in state_dict:
                prune.remove(module, name)
    for key in state_dict:
        if not key.endswith("_orig"):
            continue
        module_name, _, name = key[:-len("_orig")].rpartition(".")
        mask = state_dict.get(f"{module_name}.{name}_mask")
        if mask is None or module_name not in modules:
            raise ValueError(f"checkpoint has '{key}' but no '{module_name}.{name}_mask'")
        module = modules[module_name]
        if not hasattr(module, name + "_orig"):
            prune.custom_from_mask(module, name, mask)


def nonzero_kernels(layer):
    """(out, in) bool array: which convolutions of a graph layer have a weight that is not all zero."""
    weight = masked_weight(layer.module, layer.name)
    return weight.reshape(weight.shape[0], weight.shape[1], -1).ne(0).any(dim=2).cpu().numpy()


def copy_model(model):
    """A deep copy of a (pruned) model. torch.nn.utils.prune keeps each masked weight as a plain
    attribute computed at the last forward; after a forward with autograd it is not a leaf and
    deepcopy refuses it, so it is detached first (same values, recomputed at the next forward).
    ``model``: a module, or a wrapper holding modules (msd_pytorch's segmentation model)."""
    roots = [model] if isinstance(model, torch.nn.Module) else [v for v in vars(model).values()
                                                                if isinstance(v, torch.nn.Module)]
    for module in (m for root in roots for m in root.modules()):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod) and hasattr(module, hook._tensor_name):
                setattr(module, hook._tensor_name, getattr(module, hook._tensor_name).detach())
    return copy.deepcopy(model)
