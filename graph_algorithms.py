"""Longest multiplicative chains and LEAN's extraction, under the reference's names
(the code lives in ``pruning_toolkit.chains``)."""
from pruning_toolkit.chains import (ENGINES, EdgeGraph, ExtractionResult, LazyChainFinder, LevelChainFinder,
                                    ReferenceChainFinder, build_edge_graph, dag_longest_path_mult,
                                    graph_from_matrix, lean_extraction, longest_path_prune,
                                    longest_path_prune_edges, longest_path_prune_reference)

__all__ = ["longest_path_prune", "longest_path_prune_reference", "longest_path_prune_edges", "lean_extraction",
           "dag_longest_path_mult", "graph_from_matrix", "build_edge_graph", "EdgeGraph", "ExtractionResult",
           "ENGINES", "ReferenceChainFinder", "LevelChainFinder", "LazyChainFinder"]
