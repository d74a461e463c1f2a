import pytest

from clfa.metrics import classification_metrics


def test_binary_metrics_report_the_positive_class():
    labels = ["not_sarcastic", "sarcastic"]
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [1, 1, 0, 1, 0, 0, 0, 0]
    m = classification_metrics(y, p, labels, positive_label="sarcastic")
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    # negative class: P = 4/5, R = 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 5 * 4 / 5) / 8)
    assert m["confusion_matrix"] == {"labels": labels, "matrix": [[4, 1], [1, 2]]}
    assert m["per_class"]["sarcastic"]["support"] == 3


def test_multiclass_headline_f1_is_weighted():
    m = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], ["positive", "neutral", "negative"])
    assert "precision" not in m
    assert m["f1"] == m["weighted_f1"] == pytest.approx((1 * 1 + 1 * 0 + 2 * 0.8) / 4)
    assert m["confusion_matrix"]["matrix"][1] == [0, 0, 1]


def test_a_class_absent_from_the_split_is_named_and_left_out_of_the_macro_averages():
    from sklearn.metrics import f1_score, precision_score, recall_score

    y, p = [0, 0, 1, 1], [0, 0, 1, 0]
    m = classification_metrics(y, p, ["positive", "neutral", "negative"])
    assert m["absent_classes"] == ["negative"]
    # As scikit-learn's own defaults compute them, over the classes present
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["macro_precision"] == pytest.approx(precision_score(y, p, average="macro"))
    assert m["macro_recall"] == pytest.approx(recall_score(y, p, average="macro"))
    assert m["macro_recall"] == pytest.approx((1 + 0.5) / 2)
    # A class only predicted still counts, with its precision of 0.
    m = classification_metrics([0, 0, 1], [0, 2, 1], ["a", "b", "c"])
    assert m["absent_classes"] == ["c"] and m["macro_precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert "absent_classes" not in classification_metrics([0, 1], [0, 0], ["a", "b"])


def test_the_per_class_report_has_the_macro_figures_of_the_headline():
    m = classification_metrics([1, 1, 1], [1, 1, 0], ["not_sarcastic", "sarcastic"], positive_label="sarcastic")
    macro = {"precision": m["macro_precision"], "recall": m["macro_recall"], "f1-score": m["macro_f1"]}
    assert m["per_class"]["macro avg"] == pytest.approx(macro | {"support": 3})
    m = classification_metrics([1, 1], [1, 1], ["not_sarcastic", "sarcastic"], positive_label="sarcastic")
    assert m["per_class"]["macro avg"]["f1-score"] == m["macro_f1"] == 1.0
    assert m["per_class"]["not_sarcastic"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}


def test_what_is_not_a_class_index_of_the_labels_is_named_not_scored():
    from clfa.data.records import DataError
    from clfa.errors import OptionError

    names = ["neg", "pos"]
    # An index past the labels: scikit-learn leaves it out of the weighted F1, which would read 1.0 here.
    with pytest.raises(DataError, match=r"^labels: one class index \(0 to 1, a position in label_names\) per sample, got \[0, 2\] "
                                        r"of shape \(2,\)$"):
        classification_metrics([0, 2], [0, 1], names)
    with pytest.raises(DataError, match=r"^predictions: one class index .* got \['neg', 'pos'\] of shape \(2,\)$"):
        classification_metrics([0, 1], ["neg", "pos"], names)
    with pytest.raises(DataError, match=r"^labels: .* got \[0, 1, 0, 1, 0\]\.\.\. of shape \(7,\)$"):  # the first five shown
        classification_metrics([0, 1, 0, 1, 0, 1, -1], [0] * 7, names)
    with pytest.raises(DataError, match=r"^2 labels and 1 predictions: one of each per sample$"):
        classification_metrics([0, 1], [0], names)
    with pytest.raises(OptionError, match=r"^positive label 'sarcastic' is not one of the labels \('neg', 'pos'\)$"):
        classification_metrics([0, 1], [0, 1], names, positive_label="sarcastic")
    assert classification_metrics([0.0, 1.0], [1, 1], names, positive_label="pos")["precision"] == 0.5  # whole floats are indices
