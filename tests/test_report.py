"""Metric tables printed whole, to a terminal or to a log."""

import io

from rich.console import Console
from rich.table import Table

from clfa.metrics import classification_metrics
from clfa.report import class_table, metrics_table, print_table


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


def _rows(printed: str) -> dict[str, list[str]]:
    """The cells of each row of a printed table, by its first cell; the header's too, drawn with other bars."""
    return {cells[0]: cells[1:] for line in printed.replace("┃", "│").splitlines()
            if len(cells := [cell.strip() for cell in line.strip("│ ").split("│")]) > 1}


def test_the_per_class_table_gives_each_true_labels_figures_and_where_its_samples_went(capsys):
    metrics = classification_metrics([0, 0, 0, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["blue", "green", "red"])
    print_table(class_table(metrics, title="test: per class"))
    rows = _rows(capsys.readouterr().out)
    assert rows["true label"] == ["P", "R", "F1", "samples", "blue", "green", "red"]
    assert rows["blue"] == ["50.00", "33.33", "40.00", "3", "1", "2", "0"]
    assert rows["green"] == ["33.33", "100.00", "50.00", "1", "0", "1", "0"]
    assert rows["red"] == ["100.00", "50.00", "66.67", "2", "1", "0", "1"]


def test_the_per_class_table_of_many_classes_leaves_the_matrix_to_the_metrics_file(capsys):
    names = [f"class_{i}" for i in range(12)]
    print_table(class_table(classification_metrics(list(range(12)), list(range(12)), names)))
    rows = _rows(capsys.readouterr().out)
    assert rows["true label"] == ["P", "R", "F1", "samples"] and rows["class_11"] == ["100.00", "100.00", "100.00", "1"]


def test_a_multi_class_table_shows_its_weighted_f1_once_and_a_binary_one_both_f1s(capsys):
    three = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1], ["a", "b", "c"])
    print_table(metrics_table({"test": three}))
    header = _rows(capsys.readouterr().out)["split"]
    assert "weighted F1" in header and "F1" not in header
    two = classification_metrics([0, 1, 1], [0, 1, 0], ["no", "yes"], positive_label="yes")
    print_table(metrics_table({"test": two}))
    header = _rows(capsys.readouterr().out)["split"]
    assert "F1" in header and "weighted F1" in header
