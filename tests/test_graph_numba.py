"""The compiled (numba) chain extraction engine selects exactly what the straightforward engine selects.

The first test of a fresh checkout compiles the kernels (~8 s on 2 cores); numba caches them
on disk (``cache=True``), so later runs only load them (~1 s).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("numba", reason="numba is not installed: the compiled engine is not available")

import graph_algorithms as ga  # noqa: E402
from graph_engines_numba import NumbaChainFinder  # noqa: E402
from pruning_toolkit import chains  # noqa: E402
from test_graph_algorithms import GRAPH_KINDS, random_dag, simple_lean_extraction, tied_weights  # noqa: E402


def same_extraction(result, reference):
    return ((result.to_prune == reference.to_prune).all()
            and (result.n_chains, result.stop_reason) == (reference.n_chains, reference.stop_reason)
            and result.threshold == reference.threshold)


def test_fast_engine_is_numba_when_installed():
    graph = ga.graph_from_matrix(np.triu(np.full((3, 3), 2.0), 1))
    assert isinstance(chains._chain_finder(graph, "fast"), NumbaChainFinder)
    assert isinstance(chains._chain_finder(graph, "numba"), NumbaChainFinder)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(sorted(GRAPH_KINDS)),
       tied=st.booleans(), perc=st.floats(0.0, 1.0), cache_size=st.sampled_from([1, 2, 3, 16]))
def test_numba_selects_exactly_the_reference_edges(seed, kind, tied, perc, cache_size):
    # layered DAGs, MS-D graphs and small ResNet-like graphs with unit skip edges (tied: many
    # exact ties); small caches force the full re-evaluation path
    rng = np.random.default_rng(seed)
    matrix, skip = GRAPH_KINDS[kind](rng, tied)
    graph = ga.graph_from_matrix(matrix, skip)
    reference = ga.lean_extraction(graph, perc, engine="reference")
    result = ga.lean_extraction(graph, perc, engine=lambda g: NumbaChainFinder(g, cache_size=cache_size))
    assert same_extraction(result, reference)
    assert same_extraction(ga.lean_extraction(graph, perc, engine="numba"), reference)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), density=st.floats(0.05, 0.9),
       cache_size=st.sampled_from([1, 2, 16]))
def test_numba_chains_follow_reference_under_arbitrary_removals(seed, n, density, cache_size):
    # Not only chain edges: remove random edge sets and compare every chain on the way.
    rng = np.random.default_rng(seed)
    graph = ga.graph_from_matrix(random_dag(rng, n, density, tied_weights))
    reference, numba = ga.ReferenceChainFinder(graph), NumbaChainFinder(graph, cache_size=cache_size)
    alive = np.arange(graph.n_edges)
    while True:
        expected_nodes, expected_edges = reference.longest_chain()
        nodes, edges = numba.longest_chain()
        assert nodes.tolist() == expected_nodes.tolist() and edges.tolist() == expected_edges.tolist()
        if alive.size == 0:
            return
        removed = rng.choice(alive, size=int(rng.integers(1, min(alive.size, 4) + 1)), replace=False)
        alive = np.setdiff1d(alive, removed)
        reference.remove_edges(removed)
        numba.remove_edges(removed)


def test_ties_on_unit_skip_edges_hand_computed():
    # 0 -> 1 (skip, 1.0), 0 -> 2 (2.0), 1 -> 3 (2.0), 2 -> 3 (1.0), 3 -> 4 (1.5): both candidates
    # of node 3 are 2.0; the first in ascending predecessor (node 1, via the skip edge) wins.
    matrix = np.zeros((5, 5))
    skip = np.zeros((5, 5), dtype=bool)
    matrix[0, 1], skip[0, 1] = 1.0, True
    matrix[0, 2] = matrix[1, 3] = 2.0
    matrix[2, 3], matrix[3, 4] = 1.0, 1.5
    nodes, _ = NumbaChainFinder(ga.graph_from_matrix(matrix, skip)).longest_chain()
    assert nodes.tolist() == [0, 1, 3, 4]
    # keep 3 of the 4 prunable edges: chain [0, 1, 3, 4] keeps 1 -> 3 and 3 -> 4; then dist[2]
    # and dist[3] tie at 2.0, the first index (node 2) ends the chain [0, 2]; 2 -> 3 is pruned.
    to_prune = ga.longest_path_prune(matrix, 0.25, skip, engine="numba")
    assert list(zip(*np.nonzero(to_prune))) == [(2, 3)]
    assert (to_prune == simple_lean_extraction(matrix, 0.25, skip)).all()


# ---------------------------------------------------------------------------------------------
# Early stops and the percentile fallback
# ---------------------------------------------------------------------------------------------

def test_single_node_chain_fallback():
    rng = np.random.default_rng(1)
    graph = ga.graph_from_matrix(random_dag(rng, 12, 0.7, lambda r, shape: r.uniform(0.05, 0.95, size=shape)))
    result = ga.lean_extraction(graph, 0.75, engine="numba")
    assert result.stop_reason == "single-node chain" and result.n_chains == 1
    assert same_extraction(result, ga.lean_extraction(graph, 0.75, engine="reference"))


def test_single_node_chain_after_some_chains():
    # A few strong edges, the rest below 1: chains first, then a single-node chain, then the percentile.
    rng = np.random.default_rng(3)
    matrix = random_dag(rng, 20, 0.5, lambda r, shape: r.choice([0.3, 0.6, 0.9, 1.5, 2.0], size=shape,
                                                                 p=[0.3, 0.3, 0.3, 0.05, 0.05]))
    graph = ga.graph_from_matrix(matrix)
    result = ga.lean_extraction(graph, 0.1, engine="numba")
    assert result.stop_reason == "single-node chain" and result.n_chains > 1
    assert same_extraction(result, ga.lean_extraction(graph, 0.1, engine="reference"))


def test_skip_only_chain_fallback():
    matrix = np.zeros((5, 5))
    skip = np.zeros((5, 5), dtype=bool)
    matrix[0, 1] = matrix[1, 2] = 1.0
    skip[0, 1] = skip[1, 2] = True
    matrix[3, 4], matrix[2, 4], matrix[0, 3], matrix[3, 1] = 0.5, 0.6, 0.7, 0.8
    graph = ga.graph_from_matrix(matrix, skip)
    result = ga.lean_extraction(graph, 0.5, engine="numba")
    assert result.stop_reason == "chain of skip edges only" and result.n_chains == 1
    assert same_extraction(result, ga.lean_extraction(graph, 0.5, engine="reference"))
    assert (ga.longest_path_prune(matrix, 0.5, skip, engine="numba") == simple_lean_extraction(matrix, 0.5, skip)).all()


def test_thousand_single_edge_chains_fallback():
    rng = np.random.default_rng(2)
    n_pairs = 1200
    src = np.arange(n_pairs) * 2
    weight = np.concatenate([rng.uniform(1.0, 2.0, n_pairs - 100), rng.uniform(0.1, 0.9, 100)])
    graph = ga.build_edge_graph(2 * n_pairs, src, src + 1, weight)
    result = ga.lean_extraction(graph, 0.05, engine="numba")
    assert result.stop_reason == "1000 consecutive single-edge chains" and result.n_chains == 1000
    assert same_extraction(result, ga.lean_extraction(graph, 0.05, engine="reference"))


def test_single_node_graph_and_edgeless_graph():
    for matrix in (np.zeros((1, 1)), np.zeros((4, 4))):
        graph = ga.graph_from_matrix(matrix)
        assert NumbaChainFinder(graph).longest_chain()[0].tolist() == [0]
    matrix = np.zeros((4, 4))
    matrix[2, 3] = 0.5
    graph = ga.graph_from_matrix(matrix)
    assert same_extraction(ga.lean_extraction(graph, 0.0, engine="numba"),
                           ga.lean_extraction(graph, 0.0, engine="reference"))


def test_overflowing_products():
    rng = np.random.default_rng(7)
    matrix = random_dag(rng, 25, 0.5, lambda r, shape: r.choice([1e200, 1e250, 3e300, 0.5], size=shape))
    graph = ga.graph_from_matrix(matrix)
    for perc in (0.2, 0.6, 0.9):
        assert same_extraction(ga.lean_extraction(graph, perc, engine="numba"),
                               ga.lean_extraction(graph, perc, engine="reference"))


def test_bad_cache_size_and_negative_weights():
    graph = ga.graph_from_matrix(np.triu(np.full((3, 3), 2.0), 1))
    with pytest.raises(ValueError, match="cache_size"):
        NumbaChainFinder(graph, cache_size=0)
    negative = ga.graph_from_matrix(np.triu(np.full((3, 3), -2.0), 1))
    with pytest.raises(ValueError, match="nonnegative"):
        NumbaChainFinder(negative)
    # the dispatcher sends negative weights to the reference engine
    assert isinstance(chains._chain_finder(negative, "numba"), ga.ReferenceChainFinder)


def test_stack_regrowth_keeps_results_exact():
    # A stack too small for one refresh: the finder grows it and resumes from valid partial state.
    rng = np.random.default_rng(11)
    matrix, skip = GRAPH_KINDS["resnet"](rng, True)
    graph = ga.graph_from_matrix(matrix, skip)

    finders = []

    def tiny_stack(g):
        finder = NumbaChainFinder(g)
        finder.stack_node = np.empty(1, dtype=np.int64)
        finder.stack_kind = np.empty(1, dtype=np.int8)
        finders.append(finder)
        return finder
    for perc in (0.3, 0.8):
        assert same_extraction(ga.lean_extraction(graph, perc, engine=tiny_stack),
                               ga.lean_extraction(graph, perc, engine="reference"))
    assert finders[0].stack_node.size > 1 and finders[0].evaluations > 0


def test_node_records_are_zeroed_cache_line_rows():
    # each node's hot fields must share one 64-byte line: rows aligned, one float64 per field
    from pruning_toolkit.chains_numba import NODE_FIELDS, _aligned_records
    for n in (1, 7, 1000):
        records = _aligned_records(n, NODE_FIELDS)
        assert records.shape == (n, NODE_FIELDS) and records.flags.c_contiguous
        assert records.ctypes.data % 64 == 0 and records.strides[0] == 64
        assert not records.any()
