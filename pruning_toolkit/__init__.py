"""Internals of the pruning toolkit; the root modules (main.py, pruning_algorithms.py, ...) are its surface.

- toy experiment: ``toy_model`` (network, training recipe, checkpoints), ``toy_log`` (log lines),
  ``toy_sweep`` (generated scripts), ``toy_grid`` (in-process grid runs);
- LEAN: ``norm_graph`` (channel graphs of MS-D and FCN-ResNet50), ``graph_tracing`` (channel
  graph of any CNN by tracing), ``shrink`` (physical removal of dead channels).
"""
