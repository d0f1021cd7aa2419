"""Per-layer knowledge, one object per layer type: how the layer maps channels in the traced
graph (``graph_tracing``) and how dead channels are cut out of it (``shrinking``).

A :class:`LayerRule` is found by the module's type (its class, else the nearest base class
with a rule). Built-in rules cover Conv1d/Conv2d and BatchNorm; the MS-D model registers the
rule of its dense block where the block is defined (``msd_network``). Register a rule for your
own layer once with :func:`register_layer_rule`, or pass ``rules={LayerType: rule}`` to one
call (``trace``, ``shrink``, ``LEAN_SV``, ...) without touching global state.
"""
import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from pruning_toolkit.masks import masked_weight


class LayerRule:
    """The contract of a leaf layer type.

    ``trace`` runs after the module ran on the traced inputs (their ``TracedValue``, or None for
    tensors not derived from the model input) and returns the output's value; it adds prunable
    layers with ``tracer.add_layer`` and keeps what ``cut`` needs with ``tracer.record``.
    ``restrict`` may force more channels to stay (``keep`` is a bool array over graph nodes);
    ``cut`` cuts the recorded module down to the kept channels and returns it, or a replacement.
    An optional ``explain(explainer, module, inputs, output)`` recomputes the module's output with
    ``explainer.weighted`` for its weighted layers, so that LRP passes through it (``cnn_lrp``).
    """

    def trace(self, tracer, module, path, inputs, output):
        raise NotImplementedError

    def restrict(self, record, keep):
        pass

    def cut(self, record, keep):
        raise ValueError(f"shrink: no surgery is registered for {type(record.module).__name__} "
                         f"(its layer rule {type(self).__name__} defines no cut)")


LAYER_RULES = {}


def _check_rule(module_type, rule, where):
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ValueError(f"{where}: layer rules are keyed by a torch.nn.Module subclass, got {module_type!r}")
    if not isinstance(rule, LayerRule):
        raise ValueError(f"{where}: expected a LayerRule for {module_type.__name__}, got {type(rule).__name__}")


def register_layer_rule(module_type, rule):
    """Use ``rule`` for every module of class ``module_type`` and its subclasses."""
    _check_rule(module_type, rule, "register_layer_rule")
    LAYER_RULES[module_type] = rule


def call_rules(rules):
    """A call's own ``{type: LayerRule}`` mapping, checked (None: none)."""
    rules = dict(rules or {})
    for module_type, rule in rules.items():
        _check_rule(module_type, rule, "rules")
    return rules


def rule_for(module, rules=None):
    """The rule of ``module``'s class or nearest base class; a call's ``rules`` come first at each class."""
    for cls in type(module).__mro__:
        if rules and cls in rules:
            return rules[cls]
        if cls in LAYER_RULES:
            return LAYER_RULES[cls]
    return None


def has_parameter(module, name):
    """Whether ``module`` has parameter ``name`` (pruned or not)."""
    return getattr(module, name, None) is not None or hasattr(module, name + "_orig")


def slice_tensor(module, name, keep_per_dim, new_name=None):
    """Replace parameter or buffer ``name`` by its entries kept along each (dim, bool mask);
    a torch.nn.utils.prune mask is sliced the same way and re-applied."""
    def cut(tensor):
        for dim, keep in keep_per_dim:
            tensor = tensor.index_select(dim, torch.from_numpy(np.flatnonzero(keep)).to(tensor.device))
        return tensor

    new_name = new_name or name
    if name in module._buffers:
        module._buffers[new_name] = cut(module._buffers.pop(name))
        return
    mask = getattr(module, name + "_mask", None)
    if mask is not None:
        prune.remove(module, name)
        mask = cut(mask)
    parameter = module._parameters.pop(name)
    module.register_parameter(new_name, nn.Parameter(cut(parameter.detach()).clone(),
                                                     requires_grad=parameter.requires_grad))
    if mask is not None:
        prune.custom_from_mask(module, new_name, mask)


class ConvRule(LayerRule):
    """Conv1d / Conv2d with groups=1: a prunable layer from its input's nodes to new nodes."""

    def trace(self, tracer, module, path, inputs, output):
        if module.groups != 1:
            raise ValueError(f"graph tracing: {type(module).__name__} '{path}' has groups="
                             f"{module.groups}; only groups=1 convolutions fit LEAN's graph")
        source = tracer.single_input(inputs, module, path)
        bias = (module, "bias", np.arange(module.out_channels)) if has_parameter(module, "bias") else None
        traced = tracer.add_layer(module, "weight", source, path, output, bias=bias,
                                  channel_params=[bias] if bias else [])
        tracer.record(self, module, path, traced)
        return tracer.layer_output(traced, source)

    def explain(self, explainer, module, inputs, output):
        bias = masked_weight(module, "bias") if has_parameter(module, "bias") else None
        return explainer.weighted(module, "weight", inputs[0], module._conv_forward, bias=bias)

    def restrict(self, record, keep):
        out_nodes = record.data.layer.out_nodes
        if not keep[out_nodes].any():
            keep[out_nodes[0]] = True            # torch has no zero-channel convolution

    def cut(self, record, keep):
        module, layer = record.module, record.data.layer
        out_keep, in_keep = keep[layer.out_nodes], keep[layer.in_nodes]
        slice_tensor(module, "weight", [(0, out_keep), (1, in_keep)])
        if getattr(module, "bias", None) is not None:
            slice_tensor(module, "bias", [(0, out_keep)])
        module.out_channels, module.in_channels = int(out_keep.sum()), int(in_keep.sum())
        return module


class BatchNormRule(LayerRule):
    """BatchNorm after a convolution: scales that convolution's norms, dies with its channels."""

    def trace(self, tracer, module, path, inputs, output):
        source = tracer.single_input(inputs, module, path)
        traced = source.producer
        if traced is None or traced.layer.batchnorm is not None:
            raise ValueError(f"graph tracing: {type(module).__name__} '{path}' does not follow a "
                             f"convolution (directly or through elementwise/pooling ops); LEAN "
                             f"scales a convolution's norms by the BatchNorm after it")
        tracer.absorb(source, f"{type(module).__name__} '{path}'")
        traced.layer.batchnorm = module
        if module.affine:
            entries = np.arange(module.num_features)
            traced.layer.channel_params = [(module, "weight", entries), (module, "bias", entries)]
        tracer.record(self, module, path, traced)
        return tracer.new_value(source.nodes, source.depth)

    def cut(self, record, keep):
        module = record.module
        out_keep = keep[record.data.layer.out_nodes]
        names = ["weight", "bias"] if module.affine else []
        names += ["running_mean", "running_var"] if module.running_mean is not None else []
        for name in names:
            slice_tensor(module, name, [(0, out_keep)])
        module.num_features = int(out_keep.sum())
        return module


register_layer_rule(nn.Conv1d, ConvRule())
register_layer_rule(nn.Conv2d, ConvRule())
register_layer_rule(nn.modules.batchnorm._BatchNorm, BatchNormRule())
