"""Layer-wise relevance propagation through any CNN that ``graph_tracing`` traces.

Relevance travels as ``R = a * g``: every tensor ``a`` carries a modified gradient ``g``. Layers
with weights (Conv1d/Conv2d, Linear, the layers inside MS-D's dense block) replace their
backward by an LRP rule; everything else keeps its ordinary gradient, which makes the
relevance of linear operations without bias (pooling, upsampling, padding, concatenation,
residual additions) and of ReLU exactly conserved, with no rule of its own. A BatchNorm after a
convolution is merged into it for the explanation (the model is left unchanged).

Rules for ``y = W x + b`` with relevance ``R_y`` at its output:
- ``"zplus"`` (the toy experiment's rule): ``R_x = x * (W+^T (R_y / (W+ x + 1e-9)))``, W+ = max(W, 0);
- ``"epsilon"``: ``R_x = x * (W^T (R_y / (y + eps sign(y))))``.
The relevance of a convolution ``W[o, i]`` (a kernel) is the part of ``R_x`` that reaches
input channel i through it from output channel o; summed over i it gives output channel o's
relevance (exactly for z+, up to the stabiliser). Relevance starts at the target class's logit,
taken before a LogSoftmax or Softmax module that ends the model (MS-D's head).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruning_toolkit import runtime
from pruning_toolkit.layer_rules import rule_for
from pruning_toolkit.masks import masked_weight

RULES = ("zplus", "epsilon")
# heads that turn logits into probabilities: relevance starts at their input
NORMALISING_HEADS = (nn.LogSoftmax, nn.Softmax)
ZPLUS_STABILISER = 1e-9
EPSILON = 1e-6


@dataclass
class LayerRelevance:
    """Relevance summed over the reference samples and positions: per output channel (out,)
    and per kernel (out, in)."""

    channels: np.ndarray
    kernels: np.ndarray

    def __iadd__(self, other):
        self.channels = self.channels + other.channels
        self.kernels = self.kernels + other.kernels
        return self


def batchnorm_affine(batchnorm):
    """``(scale, shift)`` per channel of a BatchNorm in eval mode: ``y = scale * x + shift``."""
    weight = masked_weight(batchnorm, "weight") if batchnorm.affine else torch.ones_like(batchnorm.running_var)
    bias = masked_weight(batchnorm, "bias") if batchnorm.affine else torch.zeros_like(batchnorm.running_var)
    scale = weight / torch.sqrt(batchnorm.running_var + batchnorm.eps)
    return scale, bias - scale * batchnorm.running_mean


class _RuleBackward(torch.autograd.Function):
    """Identity forward of a layer's output; the backward applies the layer's LRP rule."""

    @staticmethod
    def forward(ctx, x, output, layer):
        ctx.save_for_backward(x)
        ctx.layer = layer
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return ctx.layer.relevance_backward(x, grad_output), None, None


class _PassGradient(torch.autograd.Function):
    """Identity forward of ``output``; the gradient goes to ``input`` unchanged (a merged BatchNorm)."""

    @staticmethod
    def forward(ctx, input, output):
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


class _ExplainedLayer:
    """One weighted layer under explanation: its effective (BatchNorm-merged) weights, its rule
    and, when it is a layer of the channel graph, where its relevance is recorded."""

    def __init__(self, explainer, key, weight, bias, convolve, batchnorm):
        self.explainer, self.key, self.convolve = explainer, key, convolve
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        if batchnorm is not None:
            scale, shift = batchnorm_affine(batchnorm)
            scale, shift = scale.detach(), shift.detach()
            weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
            bias = shift if bias is None else scale * bias + shift
        self.weight, self.bias = weight, bias

    def relevance_backward(self, x, grad_output):
        rule = self.explainer.rule
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            output = self.convolve(x, self.weight, self.bias)
            relevance = output.detach() * grad_output
            rule_weight = self.weight.clamp(min=0) if rule == "zplus" else self.weight
            rule_weight = rule_weight.detach().requires_grad_()
            rule_output = self.convolve(x, rule_weight, None)
            if rule == "zplus":
                denominator = rule_output.detach() + ZPLUS_STABILISER
            else:
                full = output.detach()
                denominator = full + EPSILON * torch.where(full >= 0, 1.0, -1.0)
            grad_x, grad_weight = torch.autograd.grad(rule_output, (x, rule_weight), relevance / denominator)
        if self.key is not None:
            self.explainer.record(self.key, relevance, rule_weight.detach() * grad_weight)
        return grad_x


class Explainer:
    """Hooks that make one forward-backward pass of a model an LRP pass; see :func:`layer_relevance`."""

    def __init__(self, graph, rule="zplus", rules=None):
        if rule not in RULES:
            raise ValueError(f"unknown LRP rule {rule!r}, expected one of {RULES}")
        self.rule, self.rules = rule, rules
        self.layers = {(id(layer.module), layer.name): index for index, layer in enumerate(graph.layers)}
        self.batchnorm_of = {(id(layer.module), layer.name): layer.batchnorm for layer in graph.layers}
        self.merged_batchnorms = {id(layer.batchnorm) for layer in graph.layers if layer.batchnorm is not None}
        self.recorded = {}

    def weighted(self, module, name, x, convolve, bias=None, weight=None):
        """The output of a weighted layer ``convolve(x, weight, bias)`` whose backward is the LRP rule.

        ``weight`` defaults to ``module.<name>`` with its pruning mask; a BatchNorm that follows
        in the channel graph is merged in, so the output is the BatchNorm's output."""
        key = (id(module), name)
        weight = masked_weight(module, name) if weight is None else weight
        with torch.no_grad():
            output = convolve(x, weight, bias)
        # a BatchNorm that follows still runs on this output (its backward passes the gradient
        # on unchanged); the rule sees the merged layer, whose output is the BatchNorm's
        layer = _ExplainedLayer(self, key if key in self.layers else None, weight, bias, convolve,
                                self.batchnorm_of.get(key))
        return _RuleBackward.apply(x, output, layer)

    def pass_gradient(self, input, output):
        return _PassGradient.apply(input, output)

    def record(self, key, relevance, kernel_relevance):
        channels = relevance.detach().transpose(0, 1).reshape(relevance.shape[1], -1).sum(1)
        kernels = kernel_relevance.reshape(kernel_relevance.shape[0], kernel_relevance.shape[1], -1).sum(2)
        found = LayerRelevance(channels.double().cpu().numpy(), kernels.double().cpu().numpy())
        index = self.layers[key]
        if index in self.recorded:
            self.recorded[index] += found
        else:
            self.recorded[index] = found

    # ---- hooks
    def hook(self, module, args, output):
        if isinstance(module, nn.Linear):
            return self.weighted(module, "weight", args[0], F.linear, bias=_bias(module))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if id(module) not in self.merged_batchnorms:
                raise ValueError(f"LRP: {type(module).__name__} does not follow a convolution of the channel graph")
            return self.pass_gradient(args[0], output)
        rule = rule_for(module, self.rules)
        explain = getattr(rule, "explain", None)
        if explain is None:
            raise ValueError(f"LRP: the layer rule of {type(module).__name__} does not say how relevance "
                             f"passes through it (it needs an explain method)")
        return explain(self, module, args, output)


def _bias(module):
    return masked_weight(module, "bias") if getattr(module, "bias", None) is not None else None


def _explained_modules(model, rules):
    """The modules whose forward the explainer replaces: leaves with a layer rule, and Linear."""
    found, leaves = [], []
    for name, module in model.named_modules():
        if any(name.startswith(leaf) for leaf in leaves):
            continue
        if rule_for(module, rules) is not None or isinstance(module, nn.Linear):
            found.append(module)
            if not name:
                return found
            leaves.append(name + ".")
    return found


def class_scores(output):
    """The logits of a model's output (a segmentation model's dict: its "out" entry)."""
    return output["out"] if isinstance(output, dict) else output


def explained_scores(model, inputs):
    """The class scores relevance starts from: the model's logits, taken before the LogSoftmax or
    Softmax module that ends a model such as MS-D (log-probabilities are all negative)."""
    heads = []

    def keep_input(module, args, output):
        heads.append((output, args[0]))
    handles = [module.register_forward_hook(keep_input) for module in model.modules()
               if isinstance(module, NORMALISING_HEADS)]
    try:
        scores = class_scores(model(inputs))
    finally:
        for handle in handles:
            handle.remove()
    return next((logits for output, logits in heads if output is scores), scores)


def target_mask(logits, target):
    """One-hot of ``target`` over the classes of ``logits`` (B, K, ...): per pixel for segmentation."""
    target = target.to(logits.device).long()
    if target.dim() == logits.dim():
        target = target.squeeze(1)
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"targets of shape {tuple(target.shape)} do not fit class scores of shape "
                         f"{tuple(logits.shape)} (expected (batch, ...) class indices)")
    return F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)


def layer_relevance(model, graph, inputs, target, rule="zplus", rules=None):
    """LRP relevance of every layer of ``graph`` (a channel graph of ``model``) on one batch:
    a list of :class:`LayerRelevance`, one per graph layer, and the input relevance.

    Relevance starts at the class score of ``target`` (at every pixel, for segmentation):
    ``R = logits * onehot(target)``, the logits before a final LogSoftmax or Softmax."""
    explainer = Explainer(graph, rule, rules)
    handles = [module.register_forward_hook(explainer.hook) for module in _explained_modules(model, rules)]
    try:
        with runtime.eval_mode(model), torch.enable_grad():
            inputs = inputs.detach().requires_grad_()
            logits = explained_scores(model, inputs)
            logits.backward(target_mask(logits, target))
    finally:
        for handle in handles:
            handle.remove()
    missing = [graph.layers[i].label for i in range(len(graph.layers)) if i not in explainer.recorded]
    if missing:
        raise ValueError(f"LRP: no relevance reached layers {missing[:4]} (are they used by the forward?)")
    return [explainer.recorded[i] for i in range(len(graph.layers))], (inputs * inputs.grad).detach()
