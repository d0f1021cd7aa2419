"""LRP rules against hand-computed cases, slow loop implementations and relevance conservation."""
import pytest
import torch
from torch import nn

import lrp


def linear(weight, bias=None):
    weight = torch.tensor(weight, dtype=torch.float64)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_zplus_linear_hand_computed():
    # W+ = [[1, 0], [2, 1]]; Z = [1, 4]; R/Z = [3, 1]; (R/Z) W+ = [5, 1]; R_in = x * [5, 1]
    layer = linear([[1.0, -1.0], [2.0, 1.0]], bias=[10.0, -10.0])  # z+ ignores the bias
    relevance = lrp.ZPlusRule()(layer, t([[1.0, 2.0]]), t([[3.0, 4.0]]))
    torch.testing.assert_close(relevance, t([[5.0, 2.0]]))


def test_epsilon_linear_hand_computed():
    # z = [-0.5, 4]; Z = z + 0.5 sign(z) = [-1, 4.5]; R/Z = [-3, 1]; (R/Z) W = [-1, 4]
    layer = linear([[1.0, -1.0], [2.0, 1.0]], bias=[0.5, 0.0])
    relevance = lrp.EpsilonRule(epsilon=0.5)(layer, t([[1.0, 2.0]]), t([[3.0, 4.5]]))
    torch.testing.assert_close(relevance, t([[-1.0, 8.0]]))


def test_z_rule_hand_computed():
    # z = [-0.5, 4]; R/z = [-2, 0.5]; (R/z) W = [-1, 2.5]
    layer = linear([[1.0, -1.0], [2.0, 1.0]], bias=[0.5, 0.0])
    relevance = lrp.ZRule()(layer, t([[1.0, 2.0]]), t([[1.0, 2.0]]))
    torch.testing.assert_close(relevance, t([[-1.0, 5.0]]))


def test_alpha_beta_linear_hand_computed():
    # neuron 0: contributions [1, 2] (all positive, Z+ = 3); neuron 1: [-2, -6] (all negative, Z- = -8)
    # R_in = 2 * [1/3, 2/3] * 1 - 1 * [2/8, 6/8] * 1
    layer = linear([[1.0, -1.0], [-2.0, 3.0]])
    relevance = lrp.AlphaBetaRule(alpha=2.0, beta=1.0)(layer, t([[1.0, -2.0]]), t([[1.0, 1.0]]))
    torch.testing.assert_close(relevance, t([[2 / 3 - 0.25, 4 / 3 - 0.75]]))


def test_alpha1_beta0_equals_zplus_on_positive_inputs_without_bias():
    torch.manual_seed(0)
    layer = nn.Linear(5, 4, bias=False, dtype=torch.float64)
    x, relevance = torch.rand(3, 5, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(lrp.AlphaBetaRule()(layer, x, relevance), lrp.ZPlusRule()(layer, x, relevance))


def test_alpha_beta_rejects_non_conservative_parameters():
    with pytest.raises(ValueError, match="alpha - beta"):
        lrp.AlphaBetaRule(alpha=1.0, beta=1.0)


def slow_conv_zplus(x, weight, relevance, stabiliser=1e-9):
    """LRP-z+ for a stride-1 unpadded Conv2d, one output position at a time."""
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    positive = weight.clamp(min=0)
    result = torch.zeros_like(x)
    for b in range(batch):
        for o in range(out_channels):
            for i in range(height - kh + 1):
                for j in range(width - kw + 1):
                    patch = x[b, :, i:i + kh, j:j + kw]
                    contributions = patch * positive[o]
                    share = contributions / (contributions.sum() + stabiliser)
                    result[b, :, i:i + kh, j:j + kw] += share * relevance[b, o, i, j]
    return result


def test_zplus_conv2d_matches_slow_loop():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, kernel_size=2, dtype=torch.float64)
    x = torch.rand(2, 2, 4, 5, dtype=torch.float64)
    relevance = torch.rand(2, 3, 3, 4, dtype=torch.float64)
    expected = slow_conv_zplus(x, conv.weight.detach(), relevance)
    torch.testing.assert_close(lrp.ZPlusRule()(conv, x, relevance), expected)


def test_epsilon_conv2d_with_padding_conserves_relevance_without_bias():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, kernel_size=3, padding=1, bias=False, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    relevance = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    result = lrp.ZRule()(conv, x, relevance)
    assert result.shape == x.shape
    torch.testing.assert_close(result.sum(), relevance.sum(), rtol=1e-5, atol=1e-6)


def test_average_pooling_proportional_hand_computed():
    x = t([[[[1.0, 3.0], [2.0, 2.0]]]])
    relevance = lrp.ProportionalRule()(nn.AvgPool2d(2), x, t([[[[4.0]]]]))
    torch.testing.assert_close(relevance, t([[[[0.5, 1.5], [1.0, 1.0]]]]))


def test_max_pooling_winner_takes_all():
    x = t([[[[1.0, 3.0, 0.0, 0.5], [2.0, 2.0, 0.25, 0.0]]]])
    relevance = lrp.WinnerTakesAllRule()(nn.MaxPool2d(2), x, t([[[[4.0, 7.0]]]]))
    torch.testing.assert_close(relevance, t([[[[0.0, 4.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0]]]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zplus_conserves_relevance_on_bias_free_relu_network(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8, bias=False), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 6, bias=False), nn.ReLU(), nn.Linear(6, 4, bias=False)).double().eval()
    with torch.no_grad():
        model[-1].weight.abs_()  # positive logits, so every output neuron has Z > 0
    x = torch.rand(5, 3, dtype=torch.float64)
    input_relevance, recorded = lrp.propagate(model, x, lambda logits: logits, record=(0, 3, 5))
    total = model(x).sum()
    for index in (0, 3, 5):
        torch.testing.assert_close(recorded[index].sum(), total)
    torch.testing.assert_close(input_relevance.sum(), total)


def test_propagate_through_conv_pool_flatten_linear_conserves_relevance():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3, bias=False)).double()
    with torch.no_grad():
        model[-1].weight.abs_()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    input_relevance, _ = lrp.propagate(model, x, lambda out: out)
    assert input_relevance.shape == x.shape
    torch.testing.assert_close(input_relevance.sum(), model(x).sum())


def test_propagate_leaves_model_unchanged():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrp.propagate(model, torch.rand(3, 2, dtype=torch.float64), lambda out: out)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_propagate_rejects_layers_without_rule():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(TypeError, match="Tanh"):
        lrp.propagate(model, torch.rand(1, 2), lambda out: out)
