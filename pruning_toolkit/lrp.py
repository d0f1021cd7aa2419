"""Layer-wise relevance propagation (LRP) rules as small composable objects.

A rule is called as ``rule(module, inputs, relevance)`` and returns the relevance at the
module's input, given the input the module saw in the forward pass and the relevance at its
output. Rules read the module's parameters but never modify the module or register hooks.

Rules for ``nn.Linear`` and ``nn.Conv2d``: :class:`ZRule`, :class:`EpsilonRule`,
:class:`ZPlusRule`, :class:`AlphaBetaRule`. Pooling: :class:`ProportionalRule` (sum and
average pooling) and :class:`WinnerTakesAllRule` (max pooling). Element-wise layers:
:class:`PassRule`. :func:`propagate` runs a whole ``nn.Sequential`` with a rule per layer type.
"""
import torch
from torch import nn


def _affine(module, inputs, weight, bias):
    """``module``'s linear map applied to ``inputs`` with the given (possibly modified) parameters."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(inputs, weight, bias)
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(inputs, weight, bias)
    raise TypeError(f"LRP affine rules support nn.Linear and nn.Conv2d, not {type(module).__name__}")


def _affine_transpose(module, inputs, weight, output_weights):
    """``J^T output_weights`` for the map ``x -> _affine(module, x, weight, None)`` (at ``inputs``)."""
    if isinstance(module, nn.Linear):
        return output_weights @ weight
    return _input_gradient(lambda x: _affine(module, x, weight, None), inputs, output_weights)


def _input_gradient(function, inputs, output_weights):
    """``J^T output_weights`` for ``function`` at ``inputs``, by one autograd backward pass."""
    with torch.enable_grad():
        inputs = inputs.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(function(inputs), inputs, output_weights)
    return gradient


def _redistribute(module, inputs, weight, bias, relevance, stabilise):
    """``R_in = x * J^T (R / stabilise(z))`` with ``z = x W^T + b``: R split by each input's contribution."""
    outputs = _affine(module, inputs, weight, bias)
    return inputs * _affine_transpose(module, inputs, weight, relevance / stabilise(outputs))


def _signed_stabiliser(epsilon):
    """``z -> z + epsilon * sign(z)`` with ``sign(0) = 1``: moves z away from zero."""
    def stabilise(z):
        return z + torch.where(z >= 0, epsilon, -epsilon).to(z.dtype)
    return stabilise


def _detached(parameter):
    return None if parameter is None else parameter.detach()


def _positive(tensor):
    return None if tensor is None else tensor.clamp(min=0)


def _negative(tensor):
    return None if tensor is None else tensor.clamp(max=0)


class EpsilonRule:
    """LRP-epsilon: ``R_i = sum_j x_i w_ij / (z_j + eps * sign(z_j)) R_j`` (the bias absorbs its share)."""

    def __init__(self, epsilon=1e-6):
        self.epsilon = epsilon

    def __call__(self, module, inputs, relevance):
        return _redistribute(module, inputs, _detached(module.weight), _detached(module.bias), relevance,
                             _signed_stabiliser(self.epsilon))


class ZRule(EpsilonRule):
    """LRP-0 (the z rule): LRP-epsilon with only a tiny stabiliser against division by zero."""

    def __init__(self, stabiliser=1e-9):
        super().__init__(epsilon=stabiliser)


class ZPlusRule:
    """LRP-z+: ``Z = x W+^T + stabiliser``, ``R_in = x * ((R / Z) W+)`` with ``W+ = max(W, 0)``, no bias.

    This is the rule of "Pruning by Explaining"; the stabiliser is added as is (not sign-aware).
    """

    def __init__(self, stabiliser=1e-9):
        self.stabiliser = stabiliser

    def __call__(self, module, inputs, relevance):
        return _redistribute(module, inputs, _positive(_detached(module.weight)), None, relevance,
                             lambda z: z + self.stabiliser)


class AlphaBetaRule:
    """LRP-alpha-beta: ``R_in = alpha * R_pos - beta * R_neg``.

    ``R_pos`` splits R in proportion to the positive contributions ``x+ w+`` and ``x- w-`` (the
    positive bias absorbs its share), ``R_neg`` likewise for the negative contributions
    ``x+ w-``, ``x- w+`` and the negative bias. Conservative for ``alpha - beta = 1`` without bias.
    """

    def __init__(self, alpha=1.0, beta=0.0, stabiliser=1e-9):
        if alpha - beta != 1:
            raise ValueError(f"alpha - beta must be 1 for a conservative rule, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.stabiliser = alpha, beta, stabiliser

    def _share(self, module, relevance, positive_inputs, negative_inputs, weight_of_positive, weight_of_negative,
               bias, sign):
        """Relevance split by the contributions ``x+ weight_of_positive + x- weight_of_negative (+ bias)``."""
        z = (_affine(module, positive_inputs, weight_of_positive, bias)
             + _affine(module, negative_inputs, weight_of_negative, None))
        scaled = relevance / (z + sign * self.stabiliser)
        return (positive_inputs * _affine_transpose(module, positive_inputs, weight_of_positive, scaled)
                + negative_inputs * _affine_transpose(module, negative_inputs, weight_of_negative, scaled))

    def __call__(self, module, inputs, relevance):
        weight, bias = _detached(module.weight), _detached(module.bias)
        positive_inputs, negative_inputs = _positive(inputs), _negative(inputs)
        positive = self._share(module, relevance, positive_inputs, negative_inputs,
                               _positive(weight), _negative(weight), _positive(bias), 1.0)
        if self.beta == 0:
            return self.alpha * positive
        negative = self._share(module, relevance, positive_inputs, negative_inputs,
                               _negative(weight), _positive(weight), _negative(bias), -1.0)
        return self.alpha * positive - self.beta * negative


class ProportionalRule:
    """Sum and average pooling: each input gets relevance in proportion to its share of the pooled value."""

    def __init__(self, stabiliser=1e-9):
        self.stabiliser = stabiliser

    def __call__(self, module, inputs, relevance):
        pooled = _signed_stabiliser(self.stabiliser)(module(inputs))
        return inputs * _input_gradient(module, inputs, relevance / pooled)


class WinnerTakesAllRule:
    """Max pooling: all relevance of a pooled value goes to the input that won the max."""

    def __call__(self, module, inputs, relevance):
        return _input_gradient(module, inputs, relevance)


class PassRule:
    """Element-wise layers (ReLU, Dropout, Identity) and reshapes: relevance passes unchanged."""

    def __call__(self, module, inputs, relevance):
        return relevance.reshape(inputs.shape)


DEFAULT_RULES = (
    ((nn.Linear, nn.Conv2d), ZPlusRule()),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), ProportionalRule()),
    ((nn.MaxPool2d, nn.AdaptiveMaxPool2d), WinnerTakesAllRule()),
    ((nn.ReLU, nn.Dropout, nn.Identity, nn.Flatten), PassRule()),
)


def rule_for(module, rules=DEFAULT_RULES):
    """The first rule in ``rules`` (pairs of module types and rule) whose types match ``module``."""
    for module_types, rule in rules:
        if isinstance(module, module_types):
            return rule
    raise TypeError(f"no LRP rule for layer type {type(module).__name__}")


def propagate(layers, inputs, initial_relevance, rules=DEFAULT_RULES, record=()):
    """Run ``inputs`` through ``layers`` (an ``nn.Sequential``), then propagate relevance back to the input.

    ``initial_relevance`` is the relevance at the network output, or a function of the output
    that returns it. ``record`` lists the layer indices whose output relevance to return.
    Returns ``(input_relevance, {index: relevance at the output of layer index})``.
    """
    layer_inputs = []
    with torch.no_grad():
        activation = inputs
        for layer in layers:
            layer_inputs.append(activation)
            activation = layer(activation)
        relevance = initial_relevance(activation) if callable(initial_relevance) else initial_relevance
    recorded = {}
    wanted = set(record)
    for index in range(len(layers) - 1, -1, -1):
        if index in wanted:
            recorded[index] = relevance
        relevance = rule_for(layers[index], rules)(layers[index], layer_inputs[index], relevance)
    return relevance, recorded
