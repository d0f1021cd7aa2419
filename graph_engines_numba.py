"""Compiled (numba) engine of the LEAN chain extraction: the incremental DP of ``graph_algorithms``.

Same rules and results as the straightforward engine (see ``graph_algorithms``' docstring); this
module needs numba, ``graph_algorithms`` falls back to its numpy engines without it.

After a chain's edges are removed, only the heads of the removed edges are re-evaluated, in
topological order (a heap keyed by column); a node whose dist changed re-queues exactly the
successors ``w`` with ``pred[w] == node``: with nonnegative weights removing edges only lowers
candidates, so a lower candidate that was not ``w``'s first maximum cannot become it. Each
re-evaluation is settled by the cheapest valid certificate, as in the numpy engines:
(1) the old predecessor's new candidate still beats ``runner_up`` (an upper bound on every
other candidate); (2) the best of the cached top candidates beats ``cache_bound`` (an upper
bound on every uncached one); (3) otherwise all in-edges are evaluated and the cache refilled.
``argmax(dist)`` (first index on ties) is kept in a segment tree with point updates.
"""
import numpy as np
from numba import njit

CACHE_SIZE = 16  # cached top candidates per node


# --------------------------------------------------------------------------------------------
# Kernels (state arrays are passed explicitly; every kernel is compiled once and cached on disk)
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _full_evaluation(v, start, stop, src, weight, lift, cache_edge, cache_count, cache_bound,
                     heap_value, heap_edge):
    """Evaluate every in-edge ``start:stop`` of ``v``: (best, best edge, runner-up); refills the cache.

    The cache keeps the ``K`` largest candidates (a min-heap while scanning) sorted by edge, and
    ``cache_bound[v]`` the largest candidate left out (-1 when none), so that the first maximum
    in edge order among cached candidates is the first maximum overall whenever it beats the bound.
    """
    capacity = heap_value.size
    size = 0
    best, best_edge, second, left_out = -1.0, -1, -1.0, -1.0
    for e in range(start, stop):
        w = weight[e]
        if w == 0.0:
            continue
        value = w * lift[src[e]]
        if value > best:
            second = best
            best, best_edge = value, e
        elif value > second:
            second = value
        if size < capacity:  # push, sift up
            i = size
            size += 1
            while i > 0:
                parent = (i - 1) >> 1
                if heap_value[parent] <= value:
                    break
                heap_value[i], heap_edge[i] = heap_value[parent], heap_edge[parent]
                i = parent
            heap_value[i], heap_edge[i] = value, e
        elif value > heap_value[0]:  # replace the smallest, sift down
            if heap_value[0] > left_out:
                left_out = heap_value[0]
            i = 0
            while True:
                child = 2 * i + 1
                if child >= size:
                    break
                if child + 1 < size and heap_value[child + 1] < heap_value[child]:
                    child += 1
                if heap_value[child] >= value:
                    break
                heap_value[i], heap_edge[i] = heap_value[child], heap_edge[child]
                i = child
            heap_value[i], heap_edge[i] = value, e
        elif value > left_out:
            left_out = value
    # cache the heap's edges in ascending edge order (insertion sort: the cache is small)
    for j in range(size):
        e = heap_edge[j]
        i = j
        while i > 0 and cache_edge[v, i - 1] > e:
            cache_edge[v, i] = cache_edge[v, i - 1]
            i -= 1
        cache_edge[v, i] = e
    cache_count[v] = size
    cache_bound[v] = left_out
    return best, best_edge, second


@njit(cache=True)
def _store(v, value, edge, src, dist, lift, pred, pred_edge):
    """Set v's dist and predecessor from its best candidate (value < 1: a chain starts at v)."""
    if value >= 1.0:
        dist[v] = value
        lift[v] = value
        pred[v] = src[edge]
        pred_edge[v] = edge
    else:
        dist[v] = 0.0
        lift[v] = 1.0
        pred[v] = v
        pred_edge[v] = -1


@njit(cache=True)
def _settle(v, start, stop, src, weight, dist, lift, pred, pred_edge, runner_up,
            cache_edge, cache_count, cache_bound, heap_value, heap_edge):
    """Recompute dist/pred of ``v`` whose predecessors are all exact, by the cheapest certificate."""
    edge = pred_edge[v]
    if edge >= 0 and weight[edge] != 0.0:
        value = weight[edge] * lift[pred[v]]
        if value > runner_up[v]:
            _store(v, value, edge, src, dist, lift, pred, pred_edge)
            return
    best, best_edge, second = -1.0, -1, -1.0
    for j in range(cache_count[v]):
        e = cache_edge[v, j]
        w = weight[e]
        if w == 0.0:
            continue
        value = w * lift[src[e]]
        if value > best:
            second = best
            best, best_edge = value, e
        elif value > second:
            second = value
    if best > cache_bound[v]:
        runner_up[v] = max(second, cache_bound[v])
        _store(v, best, best_edge, src, dist, lift, pred, pred_edge)
        return
    best, best_edge, second = _full_evaluation(v, start, stop, src, weight, lift, cache_edge, cache_count,
                                               cache_bound, heap_value, heap_edge)
    runner_up[v] = second
    _store(v, best, best_edge, src, dist, lift, pred, pred_edge)


@njit(cache=True)
def _tree_build(dist, tree_value, tree_node):
    """Segment tree over nodes: each inner entry holds the max of its leaves and its FIRST node."""
    leaves = tree_value.size // 2
    for v in range(dist.size):
        tree_value[leaves + v] = dist[v]
        tree_node[leaves + v] = v
    for i in range(leaves - 1, 0, -1):
        _tree_pull(i, tree_value, tree_node)


@njit(cache=True)
def _tree_pull(i, tree_value, tree_node):
    left, right = 2 * i, 2 * i + 1
    if tree_value[left] >= tree_value[right]:  # ties: the left child holds the smaller nodes
        tree_value[i], tree_node[i] = tree_value[left], tree_node[left]
    else:
        tree_value[i], tree_node[i] = tree_value[right], tree_node[right]


@njit(cache=True)
def _tree_set(v, value, tree_value, tree_node):
    i = tree_value.size // 2 + v
    tree_value[i] = value
    i >>= 1
    while i >= 1:
        _tree_pull(i, tree_value, tree_node)
        i >>= 1


@njit(cache=True)
def _initial_dp(indptr, column_node, src, weight, dist, lift, pred, pred_edge, runner_up,
                cache_edge, cache_count, cache_bound, heap_value, heap_edge):
    """The full DP in topological (column) order, filling every node's bounds and cache."""
    for c in range(column_node.size):
        v = column_node[c]
        best, best_edge, second = _full_evaluation(v, indptr[c], indptr[c + 1], src, weight, lift, cache_edge,
                                                   cache_count, cache_bound, heap_value, heap_edge)
        runner_up[v] = second
        _store(v, best, best_edge, src, dist, lift, pred, pred_edge)


@njit(cache=True)
def _heap_push(key, heap, size):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@njit(cache=True)
def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    key = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= key:
            break
        heap[i] = heap[child]
        i = child
    if size > 0:
        heap[i] = key
    return top, size


@njit(cache=True)
def _remove_and_update(edges, indptr, column_node, node_column, src, weight, out_ptr, out_target,
                       dist, lift, pred, pred_edge, runner_up, cache_edge, cache_count, cache_bound,
                       heap_value, heap_edge, queue, queued, tree_value, tree_node):
    """Remove ``edges`` (weight 0) and bring every dist/pred up to date. Returns the nodes re-evaluated."""
    size = 0
    for k in range(edges.size):
        e = edges[k]
        weight[e] = 0.0
        c = np.searchsorted(indptr, e, side="right") - 1
        v = column_node[c]
        if pred_edge[v] == e and not queued[v]:
            queued[v] = True
            size = _heap_push(c, queue, size)
    settled = 0
    while size > 0:
        c, size = _heap_pop(queue, size)
        v = column_node[c]
        queued[v] = False
        old = dist[v]
        _settle(v, indptr[c], indptr[c + 1], src, weight, dist, lift, pred, pred_edge, runner_up,
                cache_edge, cache_count, cache_bound, heap_value, heap_edge)
        settled += 1
        if dist[v] == old:
            continue
        _tree_set(v, dist[v], tree_value, tree_node)
        for k in range(out_ptr[v], out_ptr[v + 1]):
            w = out_target[k]
            if pred[w] == v and not queued[w]:
                queued[w] = True
                size = _heap_push(node_column[w], queue, size)
    return settled


@njit(cache=True)
def _trace(end, pred, pred_edge):
    """(nodes, edges) of the chain ending at ``end``, in chain order."""
    length = 1
    v = end
    while pred[v] != v:
        v = pred[v]
        length += 1
    nodes = np.empty(length, dtype=np.int64)
    edges = np.empty(length - 1, dtype=np.int64)
    v = end
    for i in range(length - 1, 0, -1):
        nodes[i] = v
        edges[i - 1] = pred_edge[v]
        v = pred[v]
    nodes[0] = v
    return nodes, edges


@njit(cache=True)
def _out_edges(n_nodes, src, indptr, column_node):
    """CSR of out-edges: ``out_target[out_ptr[u]:out_ptr[u + 1]]`` are the heads of u's edges."""
    out_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
    for e in range(src.size):
        out_ptr[src[e] + 1] += 1
    for u in range(n_nodes):
        out_ptr[u + 1] += out_ptr[u]
    fill = out_ptr[:-1].copy()
    out_target = np.empty(src.size, dtype=np.int32)
    for c in range(column_node.size):
        v = column_node[c]
        for e in range(indptr[c], indptr[c + 1]):
            out_target[fill[src[e]]] = v
            fill[src[e]] += 1
    return out_ptr, out_target


# --------------------------------------------------------------------------------------------
# The chain finder
# --------------------------------------------------------------------------------------------

class NumbaChainFinder:
    """Compiled fast engine (nonnegative weights): ``longest_chain()`` / ``remove_edges(edges)``.

    Holds one float64 copy of the weights, the out-edge heads (int32) and O(nodes) state; the
    graph's ``indptr``/``src`` arrays are shared, not copied.
    """

    def __init__(self, graph, cache_size=CACHE_SIZE):
        if (graph.weight < 0).any():
            raise ValueError("the fast engine needs nonnegative weights; use engine='reference'")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        n = graph.n_nodes
        self.indptr = np.ascontiguousarray(graph.indptr, dtype=np.int64)
        self.column_node = np.ascontiguousarray(graph.column_node, dtype=np.int64)
        self.node_column = np.ascontiguousarray(graph.node_column, dtype=np.int64)
        self.src = np.ascontiguousarray(graph.src, dtype=np.int64)
        self.weight = np.array(graph.weight, dtype=np.float64)
        self.out_ptr, self.out_target = _out_edges(n, self.src, self.indptr, self.column_node)
        self.dist = np.zeros(n)
        self.lift = np.ones(n)
        self.pred = np.arange(n, dtype=np.int64)
        self.pred_edge = np.full(n, -1, dtype=np.int64)
        self.runner_up = np.full(n, -1.0)
        self.cache_edge = np.zeros((n, cache_size), dtype=np.int64)
        self.cache_count = np.zeros(n, dtype=np.int64)
        self.cache_bound = np.full(n, -1.0)
        self.heap_value = np.empty(cache_size)
        self.heap_edge = np.empty(cache_size, dtype=np.int64)
        self.queue = np.empty(n, dtype=np.int64)
        self.queued = np.zeros(n, dtype=np.bool_)
        leaves = 1 << max(n - 1, 0).bit_length()
        self.tree_value = np.full(2 * leaves, -np.inf)
        self.tree_node = np.zeros(2 * leaves, dtype=np.int64)
        self.settled = 0  # node re-evaluations after removals (a measure of the work done)
        _initial_dp(self.indptr, self.column_node, self.src, self.weight, self.dist, self.lift, self.pred,
                    self.pred_edge, self.runner_up, self.cache_edge, self.cache_count, self.cache_bound,
                    self.heap_value, self.heap_edge)
        _tree_build(self.dist, self.tree_value, self.tree_node)

    def longest_chain(self):
        return _trace(self.tree_node[1], self.pred, self.pred_edge)

    def remove_edges(self, edges):
        edges = np.ascontiguousarray(edges, dtype=np.int64)
        if edges.size == 0:
            return
        self.settled += _remove_and_update(
            edges, self.indptr, self.column_node, self.node_column, self.src, self.weight, self.out_ptr,
            self.out_target, self.dist, self.lift, self.pred, self.pred_edge, self.runner_up, self.cache_edge,
            self.cache_count, self.cache_bound, self.heap_value, self.heap_edge, self.queue, self.queued,
            self.tree_value, self.tree_node)
