"""Classification metrics as the field reports them, from scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, precision_recall_fscore_support

from clfa.data.records import DataError
from clfa.errors import OptionError

# Metrics shown in tables, in this order; the JSON holds these plus the per-class report and confusion matrix.
HEADLINE = ("accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")


def classification_metrics(labels, predictions, label_names: list[str], positive_label: str | None = None) -> dict:
    """Accuracy; P/R/F1 of ``positive_label`` (binary tasks); macro P/R/F1; weighted F1 (the usual MVSA F1);
    per-class report and confusion matrix (rows: true class, columns: predicted, in ``label_names`` order).

    ``labels`` / ``predictions``: one class index per sample, a position in ``label_names`` (``logits.argmax(-1)``).
    Returns a dict of floats keyed by :data:`HEADLINE` names, plus ``per_class``, ``confusion_matrix``,
    ``num_samples`` and, where the split lacks a class, ``absent_classes``."""
    y, p = _class_indices(labels, "labels", label_names), _class_indices(predictions, "predictions", label_names)
    if len(y) != len(p):
        raise DataError(f"{len(y)} labels and {len(p)} predictions: one of each per sample")
    if positive_label is not None and positive_label not in label_names:
        raise OptionError(f"positive label {positive_label!r} is not one of the labels ({', '.join(map(repr, label_names))})")
    ids = list(range(len(label_names)))
    # Macro averages are over the classes the split or the predictions hold, as scikit-learn's own default: a class
    # with neither has no precision or recall to average (zero_division would count it as 0).
    present = sorted(set(y.tolist()) | set(p.tolist()))
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(y, p, labels=present, average="macro", zero_division=0)
    result = {
        "accuracy": float(accuracy_score(y, p)),
        "macro_precision": float(macro_p),
        "macro_recall": float(macro_r),
        "macro_f1": float(macro_f1),
        "weighted_f1": float(f1_score(y, p, labels=ids, average="weighted", zero_division=0)),
    }
    if positive_label is not None:
        pos = label_names.index(positive_label)
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=[pos], average=None, zero_division=0)
        result |= {"precision": float(prec[0]), "recall": float(rec[0]), "f1": float(f1[0]), "positive_label": positive_label}
    else:
        # Multi-class: the headline F1 is the weighted F1, as in the MVSA literature.
        result |= {"f1": result["weighted_f1"]}
    result["per_class"] = classification_report(y, p, labels=ids, target_names=label_names, output_dict=True, zero_division=0)
    # Its "macro avg" counts a class with no sample and no prediction as 0: the file would hold two macro figures.
    result["per_class"]["macro avg"] |= {"precision": result["macro_precision"], "recall": result["macro_recall"],
                                         "f1-score": result["macro_f1"]}
    result["confusion_matrix"] = {"labels": label_names, "matrix": confusion_matrix(y, p, labels=ids).tolist()}
    result["num_samples"] = int(len(y))
    if absent := [name for i, name in enumerate(label_names) if not (y == i).any()]:
        result["absent_classes"] = absent  # no sample of these in the split: their recall, and F1, are undefined
    return result


def _class_indices(values, name: str, label_names: list[str]) -> np.ndarray:
    """``values`` as an array of class indices, or a DataError. scikit-learn would take a label's name, or an index
    past the labels, as a class of its own, and the figures computed over ``label_names`` would leave it out unseen."""
    array = np.asarray(values)
    if array.size == 0:  # scikit-learn names that itself
        return array
    # Whole floats are indices too: labels kept in a float array or tensor.
    whole = array.ndim == 1 and (array.dtype.kind in "iu" or (array.dtype.kind == "f" and bool(np.all(np.mod(array, 1) == 0))))
    if not whole or array.min() < 0 or array.max() >= len(label_names):
        shown = array.ravel()[:5].tolist()
        raise DataError(f"{name}: one class index (0 to {len(label_names) - 1}, a position in label_names) per sample, got "
                        f"{shown}{'...' if array.size > 5 else ''} of shape {array.shape}")
    return array.astype(int)


def headline(metrics: dict) -> dict[str, float]:
    """The :data:`HEADLINE` figures of :func:`classification_metrics`' result, those it has."""
    return {k: metrics[k] for k in HEADLINE if k in metrics}
