"""LEAN with parallel edges: a convolution and an unprunable skip joining the same two channels
(``y = y + conv(y)``), or two convolutions summed. A chain takes the larger edge, a convolution
is kept only when a chain goes through it, skip edges never count (graph_algorithms docstring)."""
import numpy as np
import pytest
import torch
from torch import nn

import graph_algorithms as ga
import pruning_algorithms as lean
from pruning_toolkit import graph_tracing

ENGINES = ["reference", "lazy", "levels", "numba"]


def straightforward_extraction(n, edges, perc):
    """The spec's loop on a multigraph, written out: ``edges`` = [(src, dst, weight, skip)];
    per chain a full DP in topological order, first maximum over in-edges by (source, position)."""
    weight = np.array([w for _, _, w, _ in edges], dtype=np.float64)
    skip = np.array([s for _, _, _, s in edges], dtype=bool)
    marked = (weight != 0) & ~skip
    total = int(marked.sum())
    order = topological_order(n, edges)
    into = {v: sorted((k for k, e in enumerate(edges) if e[1] == v), key=lambda k: (edges[k][0], k)) for v in range(n)}
    fraction = 1.0
    single_edge_chains = 0
    while fraction > perc:
        dist, pred_edge = np.zeros(n), [-1] * n
        for v in order:
            best, best_edge = -np.inf, -1
            for k in into[v]:
                if weight[k] == 0:
                    continue
                u = edges[k][0]
                candidate = dist[u] * weight[k] if dist[u] != 0 else weight[k]
                if candidate > best:
                    best, best_edge = candidate, k
            if best_edge >= 0 and best >= 1:
                dist[v], pred_edge[v] = best, best_edge
        chain, node = [], int(np.argmax(dist))
        while pred_edge[node] >= 0:
            chain.append(pred_edge[node])
            node = edges[pred_edge[node]][0]
        chain.reverse()
        prunable = [k for k in chain if not skip[k]]
        for k in prunable:
            marked[k] = False
            weight[k] = 0
            fraction = marked.sum() / total
            if fraction <= perc:
                break
        if not prunable and skip.any():
            break
        single_edge_chains = single_edge_chains + 1 if len(chain) == 1 else 0
        if single_edge_chains >= 1000 or not chain:
            break
    if fraction > perc:
        left = weight[marked]
        threshold = np.percentile(left, 100 * (perc / fraction))
        marked[marked] = left < threshold
    return marked


def topological_order(n, edges):
    indegree = [0] * n
    for _, v, _, _ in edges:
        indegree[v] += 1
    ready, order = [v for v in range(n) if indegree[v] == 0], []
    while ready:
        u = ready.pop(0)
        order.append(u)
        for _, v, _, _ in (e for e in edges if e[0] == u):
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    return order


def residual_multigraph(rng, n_blocks, width):
    """Channel graph of a stack of y = y + conv(y) blocks (edges out -> in, as LEAN's norm graph):
    every conv edge o -> i of block b has a parallel unit skip edge where o and i are the same channel."""
    edges, n = [], width * (n_blocks + 1)
    for b in range(n_blocks):
        for o in range(width):
            for i in range(width):
                w = float(rng.choice([0.5, 0.9, 1.0, 1.2, 2.0, 3.0]))
                edges.append(((b + 1) * width + o, b * width + i, w, False))
            edges.append(((b + 1) * width + o, b * width + o, 1.0, True))
            if rng.random() < 0.3:                     # a second convolution summed in parallel
                edges.append(((b + 1) * width + o, b * width + o, float(rng.choice([0.5, 1.5, 2.5])), False))
    order = rng.permutation(len(edges))                # any input order
    return n, [edges[k] for k in order]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("perc", [0.3, 0.6, 0.9])
def test_engines_equal_the_straightforward_algorithm_on_parallel_edges(engine, seed, perc):
    if engine == "numba":
        pytest.importorskip("numba")
    n, edges = residual_multigraph(np.random.default_rng(seed), n_blocks=5, width=3)
    src, dst, weight, skip = (np.array(column) for column in zip(*edges))
    got = ga.longest_path_prune_edges(n, src, dst, weight, perc, skip, engine=engine)
    np.testing.assert_array_equal(got, straightforward_extraction(n, edges, perc))


def test_hand_computed_parallel_conv_and_skip():
    # nodes: 2 <- 1 <- 0 (edges out -> in); 2 -> 1 has a conv (0.5) and the skip (1); 1 -> 0 a conv (3)
    src, dst = np.array([2, 2, 1]), np.array([1, 1, 0])
    weight, skip = np.array([0.5, 1.0, 3.0]), np.array([False, True, False])
    to_prune = ga.longest_path_prune_edges(3, src, dst, weight, 0.5, skip, engine="reference")
    # the chain 2 -> 1 -> 0 takes the skip (1 > 0.5): the 0.5 conv is not on it and is pruned
    np.testing.assert_array_equal(to_prune, [True, False, False])
    weight[0] = 4.0   # now the conv is the larger: the chain goes through it, both convs are kept
    to_prune = ga.longest_path_prune_edges(3, src, dst, weight, 0.0, skip, engine="reference")
    np.testing.assert_array_equal(to_prune, [False, False, False])


class ResidualStack(nn.Module):
    """y = y + conv(y), the most common residual, three times, then a 1x1 head."""

    def __init__(self, width=4):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(3))
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x):
        y = self.stem(x)
        for conv in self.convs:
            y = y + conv(y)
        return self.head(y)


def test_lean_prunes_a_residual_sum_without_crashing_and_keeps_its_target():
    torch.manual_seed(0)
    model = ResidualStack()
    x = torch.randn(1, 1, 8, 8)
    for kept in (0.7, 0.4, 0.2):
        lean.LEAN_SV(model, kept, x)
        graph = graph_tracing.trace_channel_graph(model, x)
        assert 1 - lean.fraction_pruned(graph) <= kept + 1e-9
    for method in (lean.IndivSV_Global, lean.IndivL1_Global):
        method(ResidualStack(), 0.5, x)
