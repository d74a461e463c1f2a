"""Readable tables of metrics (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from clfa.metrics import HEADLINE

TITLES = {
    "accuracy": "Acc",
    "precision": "P",
    "recall": "R",
    "f1": "F1",
    "macro_precision": "macro P",
    "macro_recall": "macro R",
    "macro_f1": "macro F1",
    "weighted_f1": "weighted F1",
}


def metrics_table(rows: dict[str, dict], title: str = "", first_column: str = "split", keys: tuple[str, ...] = HEADLINE) -> Table:
    """One row per entry of ``rows`` (name -> metrics dict), percentages with two decimals like the paper."""
    keys = [k for k in keys if any(k in m for m in rows.values())]
    if "weighted_f1" in keys and not any("positive_label" in m for m in rows.values()):
        # Multi-class: the headline F1 is the weighted F1 (the MVSA papers'), which would show twice.
        keys = [k for k in keys if k != "f1"]
    table = Table(title=title or None)
    table.add_column(first_column)
    for key in keys:
        table.add_column(TITLES[key], justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{100 * metrics[k]:.2f}" if k in metrics else "-" for k in keys))
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` whole: to a terminal at the terminal's width, and to a file or a pipe (a log) at the table's
    own width rather than rich's default 80 columns, which cut label names short ("not_sarc…")."""
    console = console or Console()
    if not console.is_terminal:
        needed = console.measure(table, options=console.options.update_width(10_000)).maximum
        console = Console(file=console.file, width=max(console.width, needed), soft_wrap=console.soft_wrap)
    console.print(table)


# Beyond this many classes a row of counts no longer fits a terminal; the matrix is in the --output file.
MATRIX_COLUMNS = 10


def class_table(metrics: dict, title: str = "") -> Table:
    """One row per true class: its precision, recall, F1 (percentages) and samples, then, for up to
    :data:`MATRIX_COLUMNS` classes, its row of the confusion matrix: how many of its samples each class was predicted."""
    names = metrics["confusion_matrix"]["labels"]
    matrix = metrics["confusion_matrix"]["matrix"] if len(names) <= MATRIX_COLUMNS else None
    table = Table(title=title or None, caption="P, R, F1 in %; the columns after 'samples' count them by the label predicted"
                  if matrix else "P, R, F1 in %")
    for column in ("true label", "P", "R", "F1", "samples", *(names if matrix else ())):
        table.add_column(column, justify="left" if column == "true label" else "right")
    for i, name in enumerate(names):
        report = metrics["per_class"][name]
        row = [f"{100 * report[key]:.2f}" for key in ("precision", "recall", "f1-score")]
        table.add_row(name, *row, f"{int(report['support']):,}", *(f"{count:,}" for count in matrix[i]) if matrix else ())
    return table
