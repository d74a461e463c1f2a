"""Readable tables of metrics (rich)."""

from __future__ import annotations

from rich.table import Table

from clfa.metrics import HEADLINE

_TITLES = {
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
        table.add_column(_TITLES[key], justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{100 * metrics[k]:.2f}" if k in metrics else "-" for k in keys))
    return table
