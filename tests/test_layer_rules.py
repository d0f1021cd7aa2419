"""One registry of per-layer knowledge: a rule per layer type, registered by type or passed per call."""
import pytest
import torch
from torch import nn

import msd
from pruning_toolkit import layer_rules, register_layer_rule
from pruning_toolkit.graph_tracing import trace_channel_graph
from pruning_toolkit.layer_rules import ConvRule, LayerRule, rule_for


class MyConv(nn.Conv2d):
    pass


def test_rules_are_found_by_type_through_base_classes():
    assert isinstance(rule_for(MyConv(1, 1, 3)), ConvRule)
    assert isinstance(rule_for(nn.BatchNorm1d(3)), layer_rules.BatchNormRule)
    block = msd.MSDSegmentationModel(1, 2, 3, 1, dilations=[1, 2], device="cpu").msd.msd_block
    assert rule_for(block) is rule_for(msd.SparseMSDBlock2d(1, [1], [[0]]))   # one rule, both MS-D blocks
    assert rule_for(nn.ReLU()) is None


@pytest.mark.parametrize("key", ["msd.MSDBlock2d", int, None])
def test_a_rule_is_registered_by_a_module_type_only(key):
    with pytest.raises(ValueError, match="keyed by a torch.nn.Module subclass"):
        register_layer_rule(key, ConvRule())


def test_a_rule_must_be_a_layer_rule():
    with pytest.raises(ValueError, match="expected a LayerRule for MyConv"):
        register_layer_rule(MyConv, object())
    with pytest.raises(ValueError, match="expected a LayerRule for MyConv"):
        trace_channel_graph(nn.Sequential(MyConv(1, 2, 3)), torch.randn(1, 1, 5, 5), rules={MyConv: "conv"})


class Refusing(LayerRule):
    def trace(self, tracer, module, path, inputs, output):
        raise ValueError(f"refused {path}")


def test_a_call_s_rules_come_first_and_leave_the_registry_alone(monkeypatch):
    model, x = nn.Sequential(MyConv(1, 2, 3)), torch.randn(1, 1, 5, 5)
    with pytest.raises(ValueError, match="refused 0"):
        trace_channel_graph(model, x, rules={MyConv: Refusing()})
    assert len(trace_channel_graph(model, x).layers) == 1          # the registry did not change
    monkeypatch.setitem(layer_rules.LAYER_RULES, MyConv, Refusing())
    with pytest.raises(ValueError, match="refused 0"):
        trace_channel_graph(model, x)
    assert len(trace_channel_graph(model, x, rules={MyConv: ConvRule()}).layers) == 1
