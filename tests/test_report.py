"""Metric tables printed whole, to a terminal or to a log."""

import io

from rich.console import Console
from rich.table import Table

from clfa.report import metrics_table, print_table


def wide_table() -> Table:
    table = Table(title="samples per split")
    for name in ("split", "very_long_label_name_one", "very_long_label_name_two", "very_long_label_name_three", "unlabelled"):
        table.add_column(name)
    table.add_row("train", "1", "2", "3", "0")
    return table


def test_a_table_printed_to_a_log_is_not_cut_to_eighty_columns(capsys):
    print_table(wide_table())
    out = capsys.readouterr().out
    assert "very_long_label_name_three" in out and "unlabelled" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_a_terminal_keeps_its_own_width():
    file = io.StringIO()
    print_table(wide_table(), Console(file=file, width=60, force_terminal=True, color_system=None))
    assert max(len(line) for line in file.getvalue().splitlines()) <= 60


def test_metric_tables_show_percentages_with_two_decimals(capsys):
    print_table(metrics_table({"test": {"accuracy": 0.71234, "f1": 0.5}}, title="run"))
    row = next(line for line in capsys.readouterr().out.splitlines() if "test" in line)
    assert "71.23" in row and "50.00" in row
