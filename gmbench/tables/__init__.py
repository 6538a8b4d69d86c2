"""Result tables from runs.jsonl alone: CSV (wide summary + tidy long file), Markdown and
LaTeX (booktabs, sized for a two-column paper page), and the suite's figure.

Values are percentages with one decimal (as the paper prints them), mean ± std over seeds.
With ``table.reference`` (a published table, see :mod:`gmbench.reference`) the published
rows come first, each reproduced row shows its delta to the published row it names in
``reference``, and the paper's headers and grouped headers (All / Top-3, MS-COCO / VOC) are
used. Modules: :mod:`.model` (records → rows), :mod:`.marks` (best / second),
:mod:`.notes` (caption and notes), :mod:`.csvout`, :mod:`.markdown`, :mod:`.latex`
(layout chosen by estimated width, :mod:`.widths`). docs/tables.md shows the preamble a paper
needs.
"""
from .csvout import TIDY_COLUMNS, to_csv, to_tidy_csv
from .latex import latex_escape, to_latex
from .markdown import to_markdown
from .marks import rank_marks
from .model import SELECTIONS, Table, TableError, aggregate, build_table
from .write import write_tables

__all__ = ["TIDY_COLUMNS", "SELECTIONS", "Table", "TableError", "aggregate", "build_table",
           "latex_escape", "rank_marks", "to_csv", "to_latex", "to_markdown", "to_tidy_csv",
           "write_tables"]
