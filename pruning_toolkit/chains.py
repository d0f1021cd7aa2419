"""Longest multiplicative chains in a DAG and the LEAN chain extraction (numpy and scipy only).

Conventions (spec "Longest multiplicative path" and "LEAN extraction"): an entry ``A[i, j] != 0``
of a square matrix is an edge ``i -> j`` with weight ``A[i, j]``; on a LEAN norm matrix (rows =
output channels) chains therefore run from the output side of the network towards its inputs.

Public API
  ``dag_longest_path_mult(A)``                    one chain of a dense or scipy.sparse matrix
  ``longest_path_prune(A, perc, skip_connection_matrix=None, verbose=False, engine="fast")``
                                                  LEAN extraction -> bool "to prune" matrix
  ``longest_path_prune_reference(A, perc, ...)``  the same with the straightforward engine
  ``longest_path_prune_edges(n_nodes, src, dst, weight, perc, skip=None, ...)``
                                                  sparse entry point -> bool flag per input edge
  ``build_edge_graph`` / ``graph_from_matrix`` + ``lean_extraction(graph, perc, engine)``
                                                  the same with an ``ExtractionResult``
                                                  (mask, number of chains, stop reason, threshold)

Tie-breaking and rounding rules, shared by every engine so that they select exactly the same
edges (all arithmetic in float64; float32 weights are converted exactly):

* ``cand(u) = dist[u] * A[u, v]`` when ``dist[u] != 0``, else ``A[u, v]`` (one product);
* the best predecessor of ``v`` is the FIRST maximum of ``cand`` over its predecessors taken in
  ascending original node index ``u``;
* ``dist[v] = best`` and ``pred[v] = u`` when ``best >= 1``, else ``dist[v] = 0`` and
  ``pred[v] = v`` (a chain may start at ``v``); a node without predecessors has ``dist 0``;
* the chain ends at the FIRST index of ``max(dist)``; if every dist is 0 the chain is ``[0]``;
* a chain's non-skip edges are kept in chain order until the marked fraction is <= perc
  (evaluated after every single edge, as ``n_marked / float(total)``);
* the fallback threshold is ``np.percentile(w, 100 * (perc / fraction))`` (linear) over the
  float64 weights ``w`` of the edges still marked; edges with weight >= threshold are kept.
The values do not depend on the topological order used, so engines may process nodes in any
valid order.

Engines (all select exactly the same edges; ``engine=`` takes a name or a callable
``graph -> finder``):

* ``"reference"``: the straightforward algorithm: one full dynamic programme over the current
  graph per chain (vectorised per topological level; the oracle; hours on FCN-ResNet50).
* ``"lazy"``: after a chain's edges are removed no dist is recomputed eagerly; the previous
  values stay as upper bounds (with nonnegative weights every dist can only decrease when
  edges are removed) and only the nodes needed to certify the next chain's end and its
  predecessor pointers are refreshed. Best for narrow graphs (MS-D: one node per level).
* ``"levels"``: eager, one numpy batch per topological level, revisiting only nodes whose
  predecessor's dist changed. Best for wide graphs (FCN-ResNet50: ~520 nodes per level).
* ``"numba"``: the lazy idea compiled with numba (``pruning_toolkit.chains_numba``; needs numba):
  FCN-ResNet50 with norms around 1 (~44,000 chains) in ~40 s instead of hours.
* ``"fast"`` (default): "numba" when numba is installed; else "levels" if the graph has
  >= ``WIDE_LEVEL`` nodes per level on average, else "lazy".
Both fast engines certify a node ``v`` whose predecessor ``p`` is exact without looking at its
other in-edges when ``cand(p) == dist[v]`` (nothing it depends on changed) or when
``cand(p) > runner_up[v]``, an upper bound on all its other candidates; otherwise they
re-evaluate only candidates that can still win (cached best candidates, upper bounds).
Graphs with negative weights break the monotonicity and always use the reference engine.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SINGLE_EDGE_CHAIN_LIMIT = 1000
ENGINES = ("fast", "numba", "lazy", "levels", "reference")
WIDE_LEVEL = 400  # mean nodes per topological level from which "fast" picks the per-level engine
# (measured: FCN-ResNet50-sized graphs, ~520 nodes per level, run 1.7-3.5x faster on "levels";
# MS-D graphs (1 node per level) and ResNet-like graphs up to ~260 per level on "lazy")


# --------------------------------------------------------------------------------------------
# Graph representation
# --------------------------------------------------------------------------------------------

@dataclass
class EdgeGraph:
    """A DAG as column-compressed in-edge lists, columns ordered topologically.

    Column ``c`` holds the in-edges of node ``column_node[c]``; its edges ``indptr[c]:
    indptr[c + 1]`` are sorted by ascending source node. ``level_ptr`` splits the columns into
    topological levels (all sources of a level's edges lie in earlier levels).
    """

    n_nodes: int
    indptr: np.ndarray
    src: np.ndarray
    weight: np.ndarray
    skip: np.ndarray
    input_index: np.ndarray
    column_node: np.ndarray
    node_column: np.ndarray
    level_ptr: np.ndarray

    @property
    def n_edges(self):
        return int(self.src.size)

    def column_range(self, node):
        column = self.node_column[node]
        return int(self.indptr[column]), int(self.indptr[column + 1])


def _concatenated_ranges(starts, lengths):
    """Indices ``starts[k] + 0 .. lengths[k]-1`` for all k, concatenated."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lengths) + np.arange(total)


def _topological_levels(out_edges):
    """Kahn's algorithm by frontiers on a CSR matrix of out-edges: the level of every node."""
    n_nodes = out_edges.shape[0]
    out_ptr, out_dst = out_edges.indptr, out_edges.indices
    in_degree = np.bincount(out_dst, minlength=n_nodes)
    level = np.full(n_nodes, -1, dtype=np.int64)
    frontier = np.flatnonzero(in_degree == 0)
    current = 0
    while frontier.size:
        level[frontier] = current
        edges = _concatenated_ranges(out_ptr[frontier], out_ptr[frontier + 1] - out_ptr[frontier])
        in_degree -= np.bincount(out_dst[edges], minlength=n_nodes)
        frontier = np.flatnonzero((in_degree == 0) & (level < 0))
        current += 1
    if (level < 0).any():
        cyclic = np.flatnonzero(level < 0)
        raise ValueError(
            f"the graph has a cycle (expected a DAG): {cyclic.size} nodes lie on or behind a "
            f"cycle, e.g. node {int(cyclic[0])}")
    return level


def _validate_edge_arrays(n_nodes, src, dst, weight, skip):
    if not (src.shape == dst.shape == weight.shape == skip.shape):
        raise ValueError(
            f"edge arrays must have one entry per edge: got src {src.shape}, dst {dst.shape}, "
            f"weight {weight.shape}, skip {skip.shape}")
    if n_nodes < 1:
        raise ValueError(f"a graph needs at least one node, got n_nodes={n_nodes}")
    if src.size and (not np.issubdtype(src.dtype, np.integer) or not np.issubdtype(dst.dtype, np.integer)):
        raise ValueError("src and dst must be integer node indices")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_nodes):
        raise ValueError(f"node indices must lie in [0, {n_nodes}), "
                         f"got range [{min(src.min(), dst.min())}, {max(src.max(), dst.max())}]")
    if not (np.issubdtype(weight.dtype, np.number) or weight.dtype == bool) or np.iscomplexobj(weight):
        raise ValueError(f"edge weights must be real numbers, got dtype {weight.dtype}")
    if not np.isfinite(weight).all():
        raise ValueError("edge weights must be finite (found NaN or inf)")
    loops = src == dst
    if (loops & (weight != 0)).any():
        node = int(src[loops & (weight != 0)][0])
        raise ValueError(f"the graph has a cycle (expected a DAG): self-loop at node {node}")


def build_edge_graph(n_nodes, src, dst, weight, skip=None):
    """Validate an edge list ``src[k] -> dst[k]`` and build the ``EdgeGraph`` used by the engines.

    Edges of weight 0 are not edges (as in the matrix form). Weights must be finite; ``skip``
    flags unprunable edges. Parallel edges (the same two nodes, e.g. a convolution and the skip
    of ``y = y + conv(y)``) are separate candidates: a chain takes the larger (on a tie, the
    one given first), and a convolution is kept only when a chain goes through it; skip edges
    never count. Raises ValueError for bad shapes, indices or cycles.
    """
    n_nodes = int(n_nodes)
    src, dst, weight = (np.asarray(a).ravel() for a in (src, dst, weight))
    skip = np.zeros(src.shape, dtype=bool) if skip is None else np.asarray(skip, dtype=bool).ravel()
    _validate_edge_arrays(n_nodes, src, dst, weight, skip)
    present = np.flatnonzero(weight != 0)
    if present.size == weight.size:  # the usual case: no copies of the (possibly huge) index arrays
        present_src, present_dst = src, dst
    else:
        present_src, present_dst = src[present], dst[present]
    # data = input position + 1, so that no stored entry is an explicit zero
    out_edges = sp.csr_matrix((present + 1, (present_src, present_dst)), shape=(n_nodes, n_nodes))
    parallel = out_edges.nnz != present.size          # the constructor summed parallel edges
    level = _topological_levels(out_edges)
    column_node = np.argsort(level, kind="stable")
    node_column = np.empty(n_nodes, dtype=np.int64)
    node_column[column_node] = np.arange(n_nodes)
    level_ptr = np.zeros(level.max() + 2 if n_nodes else 1, dtype=np.int64)
    np.cumsum(np.bincount(level), out=level_ptr[1:])
    if parallel:
        # per column (topological), sources ascending, parallel edges in input order
        columns = node_column[present_dst]
        order = np.lexsort((present, present_src, columns))
        indptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(columns, minlength=n_nodes), out=indptr[1:])
        input_index, sources = present[order], present_src[order].astype(np.int64)
    else:
        out_edges.indices = node_column[out_edges.indices].astype(out_edges.indices.dtype)
        in_edges = out_edges.tocsc()  # per column, sources come out in ascending order
        input_index = in_edges.data - 1
        indptr, sources = in_edges.indptr.astype(np.int64), in_edges.indices.astype(np.int64)
    return EdgeGraph(n_nodes=n_nodes, indptr=indptr, src=sources, weight=weight[input_index].astype(np.float64),
                     skip=skip[input_index], input_index=input_index,
                     column_node=column_node, node_column=node_column, level_ptr=level_ptr)


def _check_square(matrix, name):
    shape = getattr(matrix, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {shape}")


def _matrix_edges(matrix):
    """(n, src, dst, weight) of the nonzero entries of a dense or scipy.sparse square matrix."""
    _check_square(matrix, "the adjacency matrix")
    if sp.issparse(matrix):
        coo = sp.coo_matrix(matrix)
        coo.sum_duplicates()
        return matrix.shape[0], coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    matrix = np.asarray(matrix)
    if not np.issubdtype(matrix.dtype, np.number) and matrix.dtype != bool:
        raise ValueError(f"the adjacency matrix must be numeric, got dtype {matrix.dtype}")
    src, dst = np.nonzero(matrix)
    return matrix.shape[0], src, dst, matrix[src, dst]


def _matrix_skip_flags(skip_connection_matrix, shape, src, dst):
    if skip_connection_matrix is None:
        return None
    if tuple(skip_connection_matrix.shape) != tuple(shape):
        raise ValueError(f"skip_connection_matrix has shape {tuple(skip_connection_matrix.shape)}, "
                         f"expected {tuple(shape)} like the adjacency matrix")
    if sp.issparse(skip_connection_matrix):
        return np.asarray(sp.csr_matrix(skip_connection_matrix)[src, dst]).ravel() != 0
    return np.asarray(skip_connection_matrix)[src, dst].astype(bool)


def graph_from_matrix(matrix, skip_connection_matrix=None):
    """``EdgeGraph`` of a dense or scipy.sparse matrix (``A[i, j] != 0`` is an edge i -> j)."""
    n, src, dst, weight = _matrix_edges(matrix)
    skip = _matrix_skip_flags(skip_connection_matrix, matrix.shape, src, dst)
    return build_edge_graph(n, src, dst, weight, skip)


# --------------------------------------------------------------------------------------------
# Full dynamic programmes and the straightforward engine (the oracle)
# --------------------------------------------------------------------------------------------

def _candidates(dist_of_sources, weights):
    """``dist[u] * A[u, v]`` where ``dist[u] != 0``, else ``A[u, v]`` (float64)."""
    return np.where(dist_of_sources != 0, dist_of_sources * weights, weights)


def _longest_chain_dp(graph, weight):
    """Full DP over ``graph`` with current edge weights ``weight`` (0 = removed): (dist, pred, pred_edge)."""
    n = graph.n_nodes
    dist = np.zeros(n)
    pred = np.arange(n)
    pred_edge = np.full(n, -1, dtype=np.int64)
    for v in graph.column_node:
        start, stop = graph.column_range(v)
        live = np.flatnonzero(weight[start:stop] != 0) + start
        if live.size == 0:
            continue
        sources = graph.src[live]
        candidates = _candidates(dist[sources], weight[live])
        best = int(np.argmax(candidates))
        if candidates[best] >= 1:
            dist[v] = candidates[best]
            pred[v] = sources[best]
            pred_edge[v] = live[best]
    return dist, pred, pred_edge


def _trace_chain(end, pred, pred_edge):
    """Follow ``pred`` from ``end`` to a node that is its own predecessor; (nodes, edges) in chain order."""
    nodes, edges = [int(end)], []
    while pred[nodes[-1]] != nodes[-1]:
        edges.append(int(pred_edge[nodes[-1]]))
        nodes.append(int(pred[nodes[-1]]))
    nodes.reverse()
    edges.reverse()
    return np.array(nodes, dtype=np.int64), np.array(edges, dtype=np.int64)


def dag_longest_path_mult(matrix):
    """Longest multiplicative chain of a DAG given as a dense or scipy.sparse matrix.

    Returns the node array ``[p0, ..., pk]`` with ``A[p_t, p_{t+1}] != 0`` (see the module
    docstring for the exact rules), or ``[0]`` when no chain has a product >= 1.
    Raises ValueError if the matrix is not square, not finite or has a cycle.
    """
    graph = graph_from_matrix(matrix)
    with np.errstate(over="ignore"):  # products may overflow to inf, as in the reference
        dist, pred, pred_edge = _longest_chain_dp(graph, graph.weight)
    nodes, _ = _trace_chain(int(np.argmax(dist)), pred, pred_edge)
    return nodes


def _level_dp(graph, weight, src, with_runner_up=False):
    """Full DP, vectorised per topological level (same values as ``_longest_chain_dp``).

    ``src`` may point removed edges (weight 0) at the sentinel node ``n``, whose dist is 0.
    Returns ``dist`` (n + 1 entries, the sentinel last), ``pred``, ``pred_edge`` (-1: none) and,
    if asked, ``runner_up``: the largest candidate of each node other than the winning one
    (-1 when there is none; an upper bound used by the fast engines, nonnegative weights only).
    """
    n = graph.n_nodes
    dist = np.zeros(n + 1)
    pred = np.arange(n)
    pred_edge = np.full(n, -1, dtype=np.int64)
    runner_up = np.full(n, -1.0) if with_runner_up else None
    for level in range(graph.level_ptr.size - 1):
        first_col, stop_col = int(graph.level_ptr[level]), int(graph.level_ptr[level + 1])
        first_edge, stop_edge = int(graph.indptr[first_col]), int(graph.indptr[stop_col])
        if first_edge == stop_edge:
            continue
        lengths = np.diff(graph.indptr[first_col:stop_col + 1])
        sources = src[first_edge:stop_edge]
        candidates = _candidates(dist[sources], weight[first_edge:stop_edge])
        nonempty = np.flatnonzero(lengths)
        starts = graph.indptr[first_col + nonempty] - first_edge
        column_max = np.maximum.reduceat(candidates, starts)
        segment = np.repeat(np.arange(nonempty.size), lengths[nonempty])
        at_max = np.flatnonzero(candidates == column_max[segment])
        first_at_max = at_max[np.r_[True, segment[at_max[1:]] != segment[at_max[:-1]]]]
        best = candidates[first_at_max]
        nodes = graph.column_node[first_col + nonempty]
        chained = best >= 1
        dist[nodes[chained]] = best[chained]
        pred[nodes[chained]] = sources[first_at_max[chained]]
        pred_edge[nodes[chained]] = first_at_max[chained] + first_edge
        if with_runner_up:
            candidates[first_at_max] = -1.0
            runner_up[nodes] = np.maximum.reduceat(candidates, starts)
    return dist, pred, pred_edge, runner_up


class ReferenceChainFinder:
    """Straightforward engine: one full DP over the whole current graph per chain."""

    def __init__(self, graph):
        self.graph = graph
        self.weight = graph.weight.copy()
        self.src = graph.src.copy()

    def longest_chain(self):
        dist, pred, pred_edge, _ = _level_dp(self.graph, self.weight, self.src)
        return _trace_chain(int(np.argmax(dist[:-1])), pred, pred_edge)

    def remove_edges(self, edges):
        self.weight[edges] = 0.0
        self.src[edges] = self.graph.n_nodes


# --------------------------------------------------------------------------------------------
# The fast engines
# --------------------------------------------------------------------------------------------

class LevelChainFinder:
    """Fast engine for wide layered graphs (nonnegative weights): eager updates, one numpy batch per level.

    After a chain's edges are removed, the levels are swept in topological order and only
    nodes whose predecessor's dist changed (or whose chain edge was removed) are revisited.
    Each revisit is settled by the cheapest valid certificate: (1) the predecessor's new
    candidate still beats ``runner_up`` (an upper bound on every other candidate); (2) the best
    of ``cache_size`` cached candidates beats ``cache_bound`` (an upper bound on all uncached
    ones); (3) otherwise all in-edges are re-evaluated and the cache refilled. Bounds stay valid
    because, with nonnegative weights, removing edges only ever lowers dist values. Caches
    keep each candidate's source and weight next to each other (node-major), so certificates
    read small contiguous rows instead of scattered entries of the edge arrays.
    """

    def __init__(self, graph, cache_size=32):
        if (graph.weight < 0).any():
            raise ValueError("the fast engine needs nonnegative weights; use engine='reference'")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        n, n_edges = graph.n_nodes, graph.n_edges
        self.n_nodes = n
        self.cache_size = int(cache_size)
        self.no_edge = n_edges  # a sentinel edge of weight 0 from the sentinel node n
        self.weight = np.append(graph.weight, 0.0)
        self.src = np.append(graph.src, n)
        self.edge_target = np.repeat(graph.column_node, np.diff(graph.indptr))
        self.column_start = graph.indptr[graph.node_column]
        self.column_stop = graph.indptr[graph.node_column + 1]
        dist, pred, pred_edge, runner_up = _level_dp(graph, graph.weight, graph.src, with_runner_up=True)
        pred_edge[pred_edge < 0] = self.no_edge
        self.lift = np.maximum(dist, 1.0)
        self.dist = dist[:n]
        self.pred, self.pred_edge, self.runner_up = pred, pred_edge, runner_up
        self.pred_weight = self.weight[pred_edge]
        self.cache_edge = np.full((n, self.cache_size), self.no_edge, dtype=np.int64)
        self.cache_src = np.full((n, self.cache_size), n, dtype=np.int64)
        self.cache_weight = np.zeros((n, self.cache_size))
        self.cache_bound = np.full(n, np.inf)  # empty caches certify nothing
        self.node_level = np.empty(n, dtype=np.int64)
        self.level_nodes = []
        for level in range(graph.level_ptr.size - 1):
            nodes = graph.column_node[graph.level_ptr[level]:graph.level_ptr[level + 1]]
            self.node_level[nodes] = level
            self.level_nodes.append(nodes[self.dist[nodes] > 0])
        self.last_child_level = np.full(n, -1, dtype=np.int64)  # deepest level fed by a node
        np.maximum.at(self.last_child_level, graph.src, self.node_level[self.edge_target])
        self.changed = np.zeros(n + 1, dtype=bool)
        self.forced = np.zeros(n, dtype=bool)

    def longest_chain(self):
        return _trace_chain(int(self.dist.argmax()), self.pred, self.pred_edge)

    def remove_edges(self, edges):
        edges = np.asarray(edges, dtype=np.int64)
        if edges.size == 0:
            return
        targets = self.edge_target[edges]
        self.weight[edges] = 0.0
        self.src[edges] = self.n_nodes
        cut = targets[self.pred_edge[targets] == edges]
        self.pred_weight[cut] = 0.0
        self.pred[cut] = self.n_nodes  # the sentinel: lift 1, so no inf * 0
        rows, columns = np.nonzero(self.cache_edge[targets] == edges[:, None])
        self.cache_weight[targets[rows], columns] = 0.0
        self.cache_src[targets[rows], columns] = self.n_nodes
        self._update(targets)

    def _update(self, targets):
        dist, pred, lift, changed, forced = self.dist, self.pred, self.lift, self.changed, self.forced
        forced[targets] = True
        touched = []
        target_levels = self.node_level[targets]
        level, last_level = int(target_levels.min()), int(target_levels.max())
        while level <= last_level:  # past last_level no node can be affected
            nodes = self.level_nodes[level]
            affected = changed[pred[nodes]] | forced[nodes]
            level += 1
            if not affected.any():
                continue
            nodes = nodes[affected]
            new_dist = self._settle(nodes)
            moved = new_dist != dist[nodes]
            if not moved.any():
                continue
            nodes, new_dist = nodes[moved], new_dist[moved]
            dist[nodes] = new_dist
            lift[nodes] = np.maximum(new_dist, 1.0)
            changed[nodes] = True
            touched.append(nodes)
            last_level = max(last_level, int(self.last_child_level[nodes].max()))
            if not new_dist.all():  # drop nodes whose dist became 0 for good
                alive = self.level_nodes[level - 1]
                self.level_nodes[level - 1] = alive[dist[alive] > 0]
        for nodes in touched:
            changed[nodes] = False
        forced[targets] = False

    def _settle(self, nodes):
        """New dist of ``nodes`` (whose predecessors are all exact); pred, pred_edge set here."""
        lift, runner_up = self.lift, self.runner_up
        new_pred = self.pred[nodes]
        new_edge = self.pred_edge[nodes]
        new_weight = self.pred_weight[nodes]
        value = new_weight * lift[new_pred]
        failed = value <= runner_up[nodes]
        if failed.any():
            failed = np.flatnonzero(failed)
            rows_nodes = nodes[failed]
            cached_sources = self.cache_src[rows_nodes]
            cached_weights = self.cache_weight[rows_nodes]
            cached_values = cached_weights * lift[cached_sources]
            best = cached_values.max(axis=1)
            certified = best > self.cache_bound[rows_nodes]
            if certified.any():
                rows = np.flatnonzero(certified)
                sources, cached_values, best = cached_sources[rows], cached_values[rows], best[rows]
                # first maximum in ascending source index among the cached candidates
                column = np.where(cached_values == best[:, None], sources, self.n_nodes + 1).argmin(axis=1)
                row = np.arange(rows.size)
                index = failed[rows]
                value[index] = best
                new_pred[index] = sources[row, column]
                new_edge[index] = self.cache_edge[rows_nodes[rows], column]
                new_weight[index] = cached_weights[rows, column]
                cached_values[row, column] = -1.0
                runner_up[nodes[index]] = np.maximum(cached_values.max(axis=1), self.cache_bound[nodes[index]])
            for index in failed[~certified].tolist():
                value[index], new_pred[index], new_edge[index], new_weight[index] = \
                    self._recompute(int(nodes[index]))
        reset = value < 1
        if reset.any():
            value[reset] = 0.0
            new_pred[reset] = nodes[reset]
            new_edge[reset] = self.no_edge
            new_weight[reset] = 0.0
        self.pred[nodes] = new_pred
        self.pred_edge[nodes] = new_edge
        self.pred_weight[nodes] = new_weight
        return value

    def _recompute(self, v):
        """Evaluate every in-edge of ``v``; refill its cache and bounds. Returns (best, pred, edge, weight)."""
        start, stop = int(self.column_start[v]), int(self.column_stop[v])
        weights = self.weight[start:stop]
        sources = self.src[start:stop]
        candidates = weights * self.lift[sources]
        j = int(candidates.argmax())
        best = float(candidates[j])
        if best < 1:
            return best, v, self.no_edge, 0.0
        size, k = stop - start, self.cache_size
        if size > k:
            order = np.argpartition(candidates, size - k)
            top = order[size - k:]
            self.cache_bound[v] = candidates[order[:size - k]].max()
        else:
            top = np.arange(size)
            self.cache_bound[v] = -1.0
        self.cache_edge[v, :top.size] = top + start
        self.cache_src[v, :top.size] = sources[top]
        self.cache_weight[v, :top.size] = weights[top]
        self.cache_edge[v, top.size:] = self.no_edge
        self.cache_src[v, top.size:] = self.n_nodes
        self.cache_weight[v, top.size:] = 0.0
        candidates[j] = -1.0
        self.runner_up[v] = candidates.max()
        return best, int(sources[j]), start + j, float(weights[j])


class LazyChainFinder:
    """Fast engine for nonnegative weights: lazily refreshed DP values (see the module docstring).

    ``dist`` values are exact when computed and upper bounds afterwards; ``stamp[v] == epoch``
    certifies that ``dist[v]`` and ``pred[v]`` are exact for the current graph. Candidates are
    computed as ``A[u, v] * lift[u]`` with ``lift = max(dist, 1)``, which is bit-identical to the
    spec's rule because dist is either 0 or >= 1. Removed edges get weight 0 and the source
    ``n`` (a sentinel node with lift 1), so they never win and never produce NaN.
    ``runner_up[v]`` bounds every candidate of ``v`` except its predecessor's from above.
    """

    def __init__(self, graph):
        if (graph.weight < 0).any():
            raise ValueError("the fast engine needs nonnegative weights; use engine='reference'")
        n = graph.n_nodes
        self.n_nodes = n
        self.weight = graph.weight.copy()
        self.src = graph.src.copy()
        self.column_start = graph.indptr[graph.node_column].tolist()
        self.column_stop = graph.indptr[graph.node_column + 1].tolist()
        dist, pred, pred_edge, runner_up = _level_dp(graph, graph.weight, graph.src, with_runner_up=True)
        self.lift = np.maximum(dist, 1.0)  # n + 1 entries: the sentinel's lift is 1
        self.dist = dist[:n]
        self.dist_list = self.dist.tolist()
        self.pred = pred.tolist()
        self.pred_edge = pred_edge.tolist()
        self.runner_up = runner_up.tolist()
        self.stamp = [0] * n
        self.epoch = 0

    def longest_chain(self):
        dist, dist_list = self.dist, self.dist_list
        while True:
            end = int(dist.argmax())
            upper_bound = dist_list[end]
            self._refresh(end)
            if dist_list[end] == upper_bound:
                return _trace_chain(end, self.pred, self.pred_edge)

    def remove_edges(self, edges):
        if len(edges):
            self.weight[edges] = 0.0
            self.src[edges] = self.n_nodes
            self.epoch += 1

    def _set(self, v, value, source, edge):
        self.dist[v] = value
        self.dist_list[v] = value
        self.lift[v] = value if value >= 1 else 1.0
        self.pred[v] = source
        self.pred_edge[v] = edge

    def _refresh(self, root):
        """Make dist[root] (and everything it depends on) exact; iterative, no recursion.

        The stack holds nodes to verify (ints) and re-evaluation frames (lists). Verifying walks
        up the predecessor chain to the first exact node and settles the nodes top-down, each
        with an O(1) certificate when possible; a node that needs its candidates re-evaluated
        gets a frame, which asks for the candidates that can still win one at a time.
        """
        epoch, stamp, dist = self.epoch, self.stamp, self.dist_list
        if stamp[root] == epoch:
            return
        pred, pred_edge, weight, runner_up = self.pred, self.pred_edge, self.weight, self.runner_up
        stack = [root]
        while stack:
            item = stack.pop()
            if item.__class__ is int:
                path = []
                v = item
                while stamp[v] != epoch:
                    if dist[v] == 0:  # a dist of 0 never grows again
                        stamp[v] = epoch
                        break
                    path.append(v)
                    v = pred[v]
                for i in range(len(path) - 1, -1, -1):
                    v = path[i]
                    p = pred[v]
                    e = pred_edge[v]
                    w = weight[e]
                    if w != 0:
                        dp = dist[p]
                        value = w * dp if dp != 0 else w
                        if value == dist[v]:  # the chain edge and its source are unchanged
                            stamp[v] = epoch
                            continue
                        if value > runner_up[v]:  # still beats every other (only lower) candidate
                            if value >= 1:
                                self._set(v, float(value), p, e)
                            else:
                                self._set(v, 0.0, v, -1)
                            stamp[v] = epoch
                            continue
                    stack.extend(path[:i])
                    stack.append(self._new_frame(v))
                    break
                continue
            if self._advance(item, stack):
                stamp[item[0]] = epoch

    def _new_frame(self, v):
        start, stop = self.column_start[v], self.column_stop[v]
        sources = self.src[start:stop]
        weights = self.weight[start:stop]
        return [v, start, sources, weights, weights * self.lift[sources], set(), -1]

    def _advance(self, frame, stack):
        """Re-evaluate the candidates of frame's node; True when settled, else pushes a candidate."""
        v, start, sources, weights, bounds, exact, pending = frame
        epoch, stamp, dist = self.epoch, self.stamp, self.dist_list
        if pending >= 0:
            du = dist[sources[pending]]
            bounds[pending] = weights[pending] * du if du != 0 else weights[pending]
            exact.add(pending)
        while True:
            j = int(bounds.argmax())
            best = float(bounds[j])
            if best < 1:
                self._set(v, 0.0, v, -1)
                return True
            if j in exact:
                self._set(v, best, int(sources[j]), start + j)
                bounds[j] = -1.0
                self.runner_up[v] = float(bounds.max())
                return True
            u = int(sources[j])
            if stamp[u] == epoch or dist[u] == 0:
                du = dist[u]
                bounds[j] = weights[j] * du if du != 0 else weights[j]
                exact.add(j)
                continue
            frame[6] = j
            stack.append(frame)
            stack.append(u)
            return False


# --------------------------------------------------------------------------------------------
# LEAN extraction
# --------------------------------------------------------------------------------------------

@dataclass
class ExtractionResult:
    """Outcome of one LEAN extraction; ``to_prune`` is aligned with the graph's edges."""

    to_prune: np.ndarray
    n_chains: int
    stop_reason: str
    threshold: float = None


def _chain_finder(graph, engine):
    """The chain finder for ``engine``: a name from ENGINES or a callable ``graph -> finder``."""
    if callable(engine):
        return engine(graph)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}, expected one of {ENGINES}")
    if engine == "reference" or (graph.weight < 0).any():
        return ReferenceChainFinder(graph)
    if engine in ("fast", "numba"):
        numba_finder = _numba_finder_class()
        if numba_finder is not None:
            return numba_finder(graph)
        if engine == "numba":
            raise ValueError("engine='numba' needs the numba package (pip install numba); "
                             "engine='fast' falls back to the numpy engines without it")
        n_levels = max(graph.level_ptr.size - 1, 1)
        engine = "levels" if graph.n_nodes / n_levels >= WIDE_LEVEL else "lazy"
    return LevelChainFinder(graph) if engine == "levels" else LazyChainFinder(graph)


def _numba_finder_class():
    """``pruning_toolkit.chains_numba.NumbaChainFinder``, or None when numba is not installed."""
    try:
        from pruning_toolkit.chains_numba import NumbaChainFinder
    except ImportError:
        return None
    return NumbaChainFinder


def _edges_until_target(n_marked, total, perc, available):
    """How many chain edges are kept: one by one until the marked fraction is <= perc.

    The fraction after each edge is evaluated exactly as one edge at a time would (float64).
    """
    if (n_marked - available) / float(total) > perc:  # fractions only fall: all edges are kept
        return available
    fractions = (n_marked - np.arange(1, available + 1)) / float(total)
    reached = np.flatnonzero(fractions <= perc)
    return int(reached[0]) + 1 if reached.size else available


def lean_extraction(graph, perc, engine="fast", verbose=False):
    """Run the LEAN extraction on an ``EdgeGraph``: the spec's loop, early stops and fallback.

    ``perc`` is the fraction of prunable (non-skip) edges to REMOVE. Chains are extracted and
    their non-skip edges kept until at most ``perc`` of the prunable edges are still marked.
    """
    perc = float(perc)
    if not 0.0 <= perc <= 1.0:
        raise ValueError(f"perc (the fraction of convolutions to remove) must lie in [0, 1], got {perc}")
    marked = ~graph.skip
    total = int(marked.sum())
    if total == 0:
        return ExtractionResult(marked, 0, "no prunable edges")
    with np.errstate(over="ignore"):  # chain products may overflow to inf, as in the reference
        result = _extract(graph, perc, engine, marked, total)
    if verbose:
        print(f"LEAN extraction: {result.n_chains} chains, stopped: {result.stop_reason}, "
              f"{int(result.to_prune.sum())} of {total} prunable edges to prune"
              + ("" if result.threshold is None else f" (threshold {result.threshold:.6g})"))
    return result


def _extract(graph, perc, engine, marked, total):
    """The chain loop, its early stops and the percentile fallback (``marked`` is updated)."""
    has_skip = bool(graph.skip.any())
    finder = _chain_finder(graph, engine)
    n_marked = total
    fraction = n_marked / float(total)
    single_edge_chains = 0
    n_chains = 0
    stop_reason = "target reached"
    while fraction > perc:
        nodes, edges = finder.longest_chain()
        n_chains += 1
        prunable = edges[~graph.skip[edges]]
        only_skip = prunable.size == 0
        if prunable.size:
            kept = _edges_until_target(n_marked, total, perc, prunable.size)
            marked[prunable[:kept]] = False
            finder.remove_edges(prunable[:kept])
            n_marked -= kept
            fraction = n_marked / float(total)
        if only_skip and has_skip:
            stop_reason = "chain of skip edges only" if nodes.size > 1 else "single-node chain"
            break
        single_edge_chains = single_edge_chains + 1 if nodes.size == 2 else 0
        if single_edge_chains >= SINGLE_EDGE_CHAIN_LIMIT:
            stop_reason = f"{SINGLE_EDGE_CHAIN_LIMIT} consecutive single-edge chains"
            break
        if nodes.size == 1:
            stop_reason = "single-node chain"
            break
    result = ExtractionResult(marked, n_chains, stop_reason)
    if fraction > perc:
        left = graph.weight[marked]  # float64, so the threshold does not depend on the input dtype
        result.threshold = float(np.percentile(left, 100 * (perc / fraction)))
        marked[marked] = left < result.threshold
    return result


def longest_path_prune_edges(n_nodes, src, dst, weight, perc, skip=None, engine="fast", verbose=False):
    """LEAN extraction on an edge list; returns the boolean "to prune" flag of every input edge.

    Sparse entry point for large graphs (e.g. FCN-ResNet50: ~27k nodes, ~14M edges): edge ``k``
    is ``src[k] -> dst[k]`` with weight ``weight[k]`` (0 = no edge), ``skip[k]`` marks an
    unprunable skip edge. Zero-weight and skip edges are never flagged. For a LEAN norm graph
    pass the norm matrix's orientation, ``A[o, i]``: ``src`` = the output-channel node ``o``,
    ``dst`` = the input-channel node ``i``. Peak memory on the FCN-ResNet50-sized graph: ~1.2 GB.
    """
    graph = build_edge_graph(n_nodes, src, dst, weight, skip)
    result = lean_extraction(graph, perc, engine=engine, verbose=verbose)
    to_prune = np.zeros(np.asarray(weight).size, dtype=bool)
    to_prune[graph.input_index] = result.to_prune
    return to_prune


def longest_path_prune(matrix, perc, skip_connection_matrix=None, verbose=False, engine="fast"):
    """LEAN extraction on a dense or scipy.sparse matrix; returns the boolean "to prune" matrix.

    ``matrix[i, j] != 0`` is an edge i -> j; ``perc`` the fraction of prunable edges to remove;
    ``skip_connection_matrix`` (bool, same shape) marks unprunable skip edges. The result has the
    input's form: a dense bool array, or a scipy.sparse CSR bool matrix for sparse input.
    """
    n, src, dst, weight = _matrix_edges(matrix)
    skip = _matrix_skip_flags(skip_connection_matrix, matrix.shape, src, dst)
    to_prune = longest_path_prune_edges(n, src, dst, weight, perc, skip, engine=engine, verbose=verbose)
    if sp.issparse(matrix):
        return sp.csr_matrix((np.ones(int(to_prune.sum()), dtype=bool),
                              (src[to_prune], dst[to_prune])), shape=matrix.shape)
    result = np.zeros(matrix.shape, dtype=bool)
    result[src[to_prune], dst[to_prune]] = True
    return result


def longest_path_prune_reference(matrix, perc, skip_connection_matrix=None, verbose=False):
    """The straightforward extraction (a full DP per chain): the slow oracle of ``longest_path_prune``."""
    return longest_path_prune(matrix, perc, skip_connection_matrix, verbose=verbose, engine="reference")
