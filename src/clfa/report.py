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
