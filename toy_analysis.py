"""Analysis of toy-experiment logs: accuracy plots, rank/set tables, decision-boundary figures.

Everything here reads logs or draws; nothing prunes. Figures go next to the analysed log.

The public surface of ``pruning_toolkit.toy_analysis``.
"""
from pruning_toolkit.toy_analysis import (KENDALL_MATRIX_MIN_RUNS, RankComparison, accuracy_statistics,
                                          class_colours, decision_grid, draw_accuracy_panel, draw_decision_regions,
                                          kendall_tau_matrix, means_table, predict_grid, qualitative_panels,
                                          rank_tables, render_evaluations, save_figure, write_accuracy_plots,
                                          write_qualitative_figure, write_rank_tables)

__all__ = [
    "KENDALL_MATRIX_MIN_RUNS", "RankComparison", "accuracy_statistics", "class_colours", "decision_grid",
    "draw_accuracy_panel", "draw_decision_regions", "kendall_tau_matrix", "means_table", "predict_grid",
    "qualitative_panels", "rank_tables", "render_evaluations", "save_figure", "write_accuracy_plots",
    "write_qualitative_figure", "write_rank_tables",
]
