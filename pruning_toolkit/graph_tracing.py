"""Build LEAN's channel graph of any CNN by running it once on an example input.

The model runs under a ``TorchFunctionMode`` (which sees every torch function and tensor
method) with forward hooks on its modules; every tensor derived from the input carries the
graph node of each of its channels (dim 1). Modules with a *layer rule* (``layer_rules``:
Conv1d/Conv2d, BatchNorm, MS-D's dense block, or your own) are leaves: their inner operations
are not looked at and the rule says how they map channels. Running the model (rather than ``torch.fx`` symbolically)
follows any Python control flow and shape arithmetic (MS-D's final layer unpacks
``input.shape``) and gives the real shapes for counting MACs.

Graph rules (spec "The norm graph"), in the numbering of the hand-written builders:
- nodes: the channels of the model inputs, then the output channels of every convolution in
  execution order;
- a BatchNorm scales the convolution it follows (directly, or through elementwise / pooling
  operations); its weight and bias die with the channel;
- elementwise ops that map 0 to 0 (ReLU & co., dropout), pooling, interpolation, padding
  with zeros, spatial slicing / reshaping / reductions pass channels through unchanged;
- ``torch.cat`` along dim 1 concatenates the channel lists (U-Net, DenseNet);
- ``a + b`` (residual addition) adds no nodes: the result's channels ARE the nodes of the
  *main branch* ``a``, and channel c of ``b`` gets an unprunable unit skip edge into channel
  c of ``a``. The main branch is the operand with more convolutions on its longest path from
  the input (the block's last conv against the identity or a downsample conv); at equal
  depth, the left operand of ``+``;
- any other operation (a Linear layer, softmax, channel shuffle, matmul, ...) *ends* the
  channel structure of its result: its input channels are kept whole, and if that result
  ever reaches a convolution, BatchNorm or dense block, tracing fails with a ValueError that
  names the operation and the module where the structure ended. Grouped convolutions and
  convolutions or BatchNorms outside a module with a rule (ConvTranspose2d, a custom layer
  calling F.conv2d) fail at once. A graph is never silently wrong.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pruning_toolkit import runtime
from pruning_toolkit.layer_rules import LayerRule, call_rules, rule_for
from pruning_toolkit.masks import masked_weight
from pruning_toolkit.norm_graph import ChannelGraph, ConvLayer

# ============================================================================================
# Traced values and the traced network
# ============================================================================================


@dataclass
class TracedValue:
    """Channel structure of one traced tensor: the graph node of each channel (dim 1)."""

    nodes: np.ndarray
    generations: np.ndarray      # node generations when the value was made (see _Tracer.absorb)
    depth: int                   # convolutions on the longest path from the model input
    producer: "TracedLayer" = None   # the convolution whose output this still is (for BatchNorm)


@dataclass
class Ended:
    """Marks a tensor derived from the input whose channel structure ended at ``where``."""

    where: str


@dataclass
class TracedLayer:
    """A prunable layer found by the tracer, with what shrinking and MAC counting need."""

    layer: ConvLayer
    path: str        # module path, or "<module path>.<parameter>" for a layer inside a module
    macs: int        # multiply-accumulates of this layer on the example input
    bias: tuple = None   # (module, parameter name, entry of each output channel): pre-BN bias


@dataclass
class ModuleRecord:
    """A leaf module the tracer met, for its rule's ``cut`` when shrinking (``data`` is rule-defined)."""

    rule: LayerRule
    module: nn.Module
    path: str
    data: object


@dataclass
class TracedNetwork:
    """Everything one trace found: layers, skip edges, the nodes that must keep their shape."""

    num_nodes: int
    input_nodes: np.ndarray
    layers: list
    skip_edges: np.ndarray
    protected: np.ndarray        # bool over nodes: model inputs, outputs, inputs of ended ops
    records: list = field(default_factory=list)

    @property
    def conv_macs(self):
        return sum(traced.macs for traced in self.layers)

    def channel_graph(self, exclude=()):
        """The :class:`ChannelGraph` of the prunable layers (layers named in ``exclude``, or
        below a module named there, left out; unused nodes dropped, order kept)."""
        if not self.layers:
            raise ValueError("graph tracing found no prunable layer (Conv1d/Conv2d, or a module "
                             "with a layer rule) in the model")
        _check_exclusions(exclude, [t.path for t in self.layers])
        layers = [t.layer for t in self.layers if not _excluded(t.path, exclude)]
        used = np.zeros(self.num_nodes, dtype=bool)
        produced = np.zeros(self.num_nodes, dtype=bool)
        for layer in layers:
            used[layer.in_nodes] = used[layer.out_nodes] = produced[layer.out_nodes] = True
        used[self.skip_edges.ravel()] = True
        new_index = np.cumsum(used) - 1
        renumbered = [ConvLayer(layer.module, layer.name, new_index[layer.in_nodes],
                                new_index[layer.out_nodes], layer.batchnorm, layer.channel_params)
                      for layer in layers]
        sources = new_index[np.flatnonzero(used & ~produced)]
        return ChannelGraph(int(used.sum()), sources, renumbered, new_index[self.skip_edges])


def _excluded(path, exclude):
    return any(path == name or path.startswith(name + ".") for name in exclude)


def _check_exclusions(exclude, paths):
    if isinstance(exclude, str):
        raise ValueError(f"exclude must be a list of layer names, got the string {exclude!r}")
    for name in exclude:
        if not any(_excluded(path, [name]) for path in paths):
            shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
            raise ValueError(f"exclude: no prunable layer is named {name!r} or lies below it "
                             f"(layers: {shown})")


# ============================================================================================
# Function-level operations
# ============================================================================================

# Map 0 to 0 and act on each channel alone: the output's channels are the input's.
_PASS_THROUGH = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
    "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish", "hardswish", "tanh", "tanh_",
    "softsign", "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "feature_dropout",
    "alpha_dropout", "feature_alpha_dropout", "clone", "contiguous", "detach", "to", "float",
    "double", "half", "bfloat16", "cpu", "cuda",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "adaptive_max_pool2d_with_indices", "lp_pool1d", "lp_pool2d",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
}
_RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "unflatten"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "nansum", "nanmean"}
_PERMUTES = {"permute", "transpose", "swapaxes", "movedim"}
_ADDS = {"add", "add_", "__add__", "__iadd__", "__radd__"}
_CATS = {"cat", "concat", "concatenate"}
# Layers whose weights LEAN would prune: outside a module with a layer rule they are errors.
_LAYERS_WITHOUT_RULE = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "batch_norm"}


def _argument(args, kwargs, position, name, default=None):
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default)


def _normalized_dims(dims, ndim):
    dims = dims if isinstance(dims, (tuple, list, torch.Size)) else (dims,)
    return [int(d) % ndim for d in dims]


def _keeps_channel_axis(name, args, kwargs, x, out):
    """Whether the op leaves the batch and channel axes alone (so channels pass through)."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or tuple(out.shape[:2]) != tuple(x.shape[:2]):
        return False
    if name in _PASS_THROUGH or name in _RESHAPES:
        return True      # for reshapes, unchanged (batch, channel) sizes keep every channel whole
    if name == "pad":
        pad, mode = _argument(args, kwargs, 1, "pad"), _argument(args, kwargs, 2, "mode", "constant")
        value = _argument(args, kwargs, 3, "value", None)
        return len(pad) <= 2 * (x.dim() - 2) and (mode != "constant" or not value)
    if name in _REDUCTIONS:
        dims = _argument(args, kwargs, 1, "dim")
        return dims is not None and all(d >= 2 for d in _normalized_dims(dims, x.dim()))
    if name in _PERMUTES:
        if name == "permute":
            order = args[1:] if len(args) > 2 else _argument(args, kwargs, 1, "dims")
            return list(_normalized_dims(order, x.dim())[:2]) == [0, 1]
        first, second = _argument(args, kwargs, 1, "dim0"), _argument(args, kwargs, 2, "dim1")
        return all(d >= 2 for d in _normalized_dims((first, second), x.dim()))
    if name == "__getitem__":
        return _index_keeps_channels(args[1], x.dim())
    return False


def _index_keeps_channels(index, ndim):
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        position = index.index(Ellipsis)
        explicit = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:position] + (slice(None),) * (ndim - explicit) + index[position + 1:]
    leading = index[:2]
    return all(isinstance(i, slice) and i == slice(None) for i in leading)


def tensors_in(obj):
    """Tensors in an op's argument or result (one level of tuples/lists/dicts)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensors_in(item)]
    return []


# ============================================================================================
# The tracer
# ============================================================================================


class _FunctionMode(TorchFunctionMode):
    def __init__(self, tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracer = self.tracer
        if not tracer.busy and not tracer.leaf_depth:
            tracer.busy = True
            try:
                tracer.on_function(func, args, kwargs, out)
            finally:
                tracer.busy = False
        return out


class _Tracer:
    """Runs the model once, numbering channels and collecting layers (see the module docstring)."""

    def __init__(self, model, rules=None):
        self.model = model
        self.rules = rules
        self.paths = {}
        for path, module in model.named_modules():
            self.paths.setdefault(id(module), path)
        self.values = {}              # id(tensor) -> (tensor, TracedValue | Ended)
        self.generation = np.zeros(0, dtype=np.int64)   # per node: bumped when its meaning changes
        self.read_by = []             # per node: what read it first (None while unread)
        self.protected = np.zeros(0, dtype=bool)
        self.layers, self.skips, self.records = [], [], []
        self.stack, self.leaf_depth, self.busy = [], 0, False
        self.pending = {}             # leaf module id -> its input values
        self.seen_parameters = set()

    # ---- nodes and values
    def new_nodes(self, count):
        start = len(self.generation)
        self.generation = np.concatenate([self.generation, np.zeros(count, dtype=np.int64)])
        self.read_by += [None] * count
        self.protected = np.concatenate([self.protected, np.zeros(count, dtype=bool)])
        return np.arange(start, start + count, dtype=np.int64)

    def new_value(self, nodes, depth, producer=None):
        nodes = np.asarray(nodes, dtype=np.int64)
        generations = self.generation[nodes]
        return TracedValue(nodes, generations, depth, producer)

    def value_of(self, tensor):
        entry = self.values.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def set_value(self, tensor, value):
        self.values[id(tensor)] = (tensor, value)

    def where(self):
        if not self.stack:
            return "the model's forward"
        module = self.stack[-1]
        return f"module '{self.paths.get(id(module), '?')}' ({type(module).__name__})"

    def check_fresh(self, value, reader):
        if not np.array_equal(self.generation[value.nodes], value.generations):
            raise ValueError(f"graph tracing: {reader} in {self.where()} reads channels from before "
                             f"a residual addition or BatchNorm merged them; the graph cannot tell "
                             f"the two apart")

    def read(self, value, reader):
        """Mark ``value``'s nodes as read by ``reader`` (a convolution, skip edge or output)."""
        self.check_fresh(value, reader)
        for node in value.nodes.tolist():
            if self.read_by[node] is None:
                self.read_by[node] = reader

    def absorb(self, value, by):
        """``by`` takes over ``value``'s nodes (BatchNorm, the main branch of a sum): they must
        be unread so far, and older values holding them become stale."""
        self.check_fresh(value, by)
        readers = {self.read_by[n] for n in value.nodes.tolist()} - {None}
        if readers:
            raise ValueError(f"graph tracing: {by} in {self.where()} changes channels that "
                             f"{sorted(readers)[0]} already read; LEAN's graph has one node per "
                             f"channel and cannot hold both")
        self.generation[value.nodes] += 1

    def protect(self, value, reader):
        self.read(value, reader)
        self.protected[value.nodes] = True

    # ---- what rules call
    def single_input(self, inputs, module, path):
        """The one traced tensor a leaf module reads; errors for ended or foreign inputs."""
        name = f"{type(module).__name__} '{path}'"
        tracked = [v for v in inputs if v is not None]
        if len(tracked) != 1 or len(inputs) != 1:
            raise ValueError(f"graph tracing: {name} must read exactly one tensor derived from the "
                             f"example input, got {len(inputs)} tensor inputs ({len(tracked)} traced)")
        value = tracked[0]
        if isinstance(value, Ended):
            raise ValueError(f"graph tracing: {name} reads a tensor whose channels were mixed or "
                             f"reordered by {value.where}; LEAN's graph cannot follow its channels")
        return value

    def add_layer(self, module, parameter, source, path, output, bias=None, channel_params=()):
        """A prunable layer ``module.<parameter>`` (weight[out, in, ...]) reading ``source``."""
        key = (id(module), parameter)
        if key in self.seen_parameters:
            raise ValueError(f"graph tracing: '{path}' runs more than once in one forward pass; "
                             f"layers that share weights are not supported")
        self.seen_parameters.add(key)
        weight = masked_weight(module, parameter)
        if weight.shape[1] != len(source.nodes):
            raise ValueError(f"graph tracing: '{path}' has {weight.shape[1]} input channels but "
                             f"reads a tensor of {len(source.nodes)} channels")
        self.read(source, f"'{path}'")
        out_nodes = self.new_nodes(weight.shape[0])
        layer = ConvLayer(module, parameter, source.nodes, out_nodes, None, list(channel_params))
        macs = weight.numel() * output.shape[0] * int(np.prod(output.shape[2:]))
        traced = TracedLayer(layer, path, macs, bias)
        self.layers.append(traced)
        return traced

    def layer_output(self, traced, source):
        return self.new_value(traced.layer.out_nodes, source.depth + 1, producer=traced)

    def record(self, rule, module, path, data):
        self.records.append(ModuleRecord(rule, module, path, data))

    # ---- hooks
    def pre_hook(self, module, args, kwargs):
        self.stack.append(module)
        if self.leaf_depth == 0 and rule_for(module, self.rules) is not None:
            self.pending[id(module)] = [self.value_of(t) for t in tensors_in(args) + tensors_in(kwargs)]
        if self.leaf_depth or rule_for(module, self.rules) is not None:
            self.leaf_depth += 1

    def post_hook(self, module, args, kwargs, output):
        self.stack.pop()
        rule = rule_for(module, self.rules)
        if self.leaf_depth:
            self.leaf_depth -= 1
        if rule is None or self.leaf_depth:
            return
        inputs = self.pending.pop(id(module))
        self.busy = True
        try:
            self.stack.append(module)
            path = self.paths.get(id(module), "?")
            value = rule.trace(self, module, path, inputs, output)
            self.stack.pop()
            outputs = tensors_in(output)
            if isinstance(value, TracedValue) and (len(outputs) != 1 or outputs[0].shape[1] != len(value.nodes)):
                raise ValueError(f"graph tracing: the layer rule of {type(module).__name__} "
                                 f"'{path}' gave {len(value.nodes)} channels for its output")
            for tensor in outputs:
                self.set_value(tensor, value)
        finally:
            self.busy = False

    # ---- function-level operations
    def on_function(self, func, args, kwargs, out):
        outputs = tensors_in(out)
        if not outputs:
            return
        seen = [(t, self.value_of(t)) for t in tensors_in(args) + tensors_in(kwargs)]
        tracked = [(t, v) for t, v in seen if isinstance(v, TracedValue)]
        ended = [v for _, v in seen if isinstance(v, Ended)]
        if not tracked and not ended:
            return
        name = getattr(func, "__name__", repr(func))
        if name in _LAYERS_WITHOUT_RULE:
            raise ValueError(f"graph tracing: {name} in {self.where()} is a convolution or "
                             f"BatchNorm outside a module with a layer rule (a transposed or "
                             f"custom layer?); give it a LayerRule (pruning_toolkit.register_layer_rule, or rules=...)")
        value = self.function_value(name, args, kwargs, out, tracked, ended) if tracked else None
        if value is None:
            for _, traced in tracked:
                self.protect(traced, f"{name} in {self.where()}")
            value = ended[0] if ended and not tracked else Ended(f"{name} in {self.where()}")
        self.set_value(outputs[0], value)
        for tensor in outputs[1:]:
            if tensor is not outputs[0]:
                self.set_value(tensor, Ended(f"{name} in {self.where()}"))

    def function_value(self, name, args, kwargs, out, tracked, ended):
        """The output value of a known channel operation, or None if it ends the structure."""
        if ended:
            return None
        result = out[0] if isinstance(out, (tuple, list)) else out
        if name in _ADDS:
            return self.residual_sum(args, kwargs, tracked, name)
        if name in _CATS:
            return self.concatenation(args, kwargs, tracked, result)
        x, source = tracked[0]
        first = args[0] if args else kwargs.get("input")
        if len(tracked) != 1 or first is not x:
            return None
        if _keeps_channel_axis(name, args, kwargs, x, result):
            self.check_fresh(source, f"{name}")
            return TracedValue(source.nodes, source.generations, source.depth, source.producer)
        return None

    def residual_sum(self, args, kwargs, tracked, name):
        if len(tracked) != 2 or len(args) < 2 or kwargs.get("alpha", 1) != 1:
            return None
        (left, a), (right, b) = tracked
        if left.dim() < 2 or left.shape[1] != right.shape[1] or len(a.nodes) != len(b.nodes):
            return None
        main, skip = (b, a) if b.depth > a.depth else (a, b)
        if np.intersect1d(main.nodes, skip.nodes).size:
            return None      # x + x: a scaling, not a residual connection
        self.read(skip, f"the residual {name} in {self.where()}")
        self.absorb(main, f"the residual {name}")
        self.skips.append(np.stack([main.nodes, skip.nodes], axis=1))
        return self.new_value(main.nodes, max(a.depth, b.depth))

    def concatenation(self, args, kwargs, tracked, result):
        parts = _argument(args, kwargs, 0, "tensors")
        values = [self.value_of(t) for t in parts]
        dim = _argument(args, kwargs, 1, "dim", 0)
        if any(not isinstance(v, TracedValue) for v in values) or int(dim) % result.dim() != 1:
            return None
        for value in values:
            self.check_fresh(value, "cat")
        nodes = np.concatenate([v.nodes for v in values])
        generations = np.concatenate([v.generations for v in values])
        return TracedValue(nodes, generations, max(v.depth for v in values))


def as_inputs(example_input):
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_input):
        return tuple(example_input)
    raise ValueError("example_input must be a tensor (batch, channels, ...) or a tuple of tensors, "
                     f"got {type(example_input).__name__}")


def trace(model, example_input, rules=None):
    """Run ``model`` once (eval mode, no grad; its state is left as it was) on
    ``example_input`` and return the :class:`TracedNetwork`; ``rules``: layer rules of this
    call (``{type: LayerRule}``), before the registered ones."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"graph tracing needs a torch.nn.Module, got {type(model).__name__} "
                         f"(for msd_pytorch-style wrappers pass model.net or model.msd)")
    inputs = as_inputs(example_input)
    tracer = _Tracer(model, call_rules(rules))
    input_nodes = []
    for tensor in inputs:
        if tensor.dim() < 2:
            raise ValueError(f"example_input tensors need a channel dimension (batch, channels, "
                             f"...), got shape {tuple(tensor.shape)}")
        nodes = tracer.new_nodes(tensor.shape[1])
        input_nodes.append(nodes)
        tracer.set_value(tensor, tracer.new_value(nodes, 0))
    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(tracer.post_hook, with_kwargs=True))
        with runtime.eval_mode(model), torch.no_grad(), _FunctionMode(tracer):
            output = model(*inputs)
        tracer.busy = True
        for tensor in tensors_in(output):
            value = tracer.value_of(tensor)
            if isinstance(value, TracedValue):
                tracer.protect(value, "the model output")
    finally:
        for handle in handles:
            handle.remove()
    input_nodes = np.concatenate(input_nodes)
    protected = tracer.protected.copy()
    protected[input_nodes] = True
    skips = np.concatenate(tracer.skips) if tracer.skips else np.zeros((0, 2), dtype=np.int64)
    return TracedNetwork(len(tracer.generation), input_nodes, tracer.layers, skips, protected,
                         tracer.records)


def trace_channel_graph(model, example_input, exclude=(), rules=None):
    """LEAN's :class:`ChannelGraph` of ``model``, layers named in ``exclude`` left out."""
    return trace(model, example_input, rules).channel_graph(exclude)
