"""Figures: the alignment heat map of the paper's Figure 4, of the demo's models or of any trained ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
import shutil
from pathlib import Path

import numpy as np

from clfa.data.records import Record
from clfa.errors import OptionError
from clfa.files import whole_output, writing

# Above this many pairs the records' ids, one per row and column, overlap into a smear.
_MOST_TICKS = 32


def cosine_matrix(text_features: np.ndarray, image_features: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarity of every text feature (rows) with every image feature (columns)."""
    t = text_features / np.linalg.norm(text_features, axis=1, keepdims=True).clip(1e-12)
    i = image_features / np.linalg.norm(image_features, axis=1, keepdims=True).clip(1e-12)
    return t @ i.T


def figure_format(path: str | Path, option: str | None = None) -> str:
    """The format a figure is written to ``path`` in: its suffix's, or matplotlib's default (PNG) for a name without
    one. A suffix matplotlib cannot write is an OptionError, naming ``option`` (a flag) and the formats it can."""
    from matplotlib import rcParams
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().removeprefix(".")
    named = f"{f'{option} ' if option else ''}{path}"
    if suffix and suffix not in (formats := FigureCanvasBase.get_supported_filetypes()):
        raise OptionError(f"{named}: .{suffix} is no image format matplotlib writes; give a name ending in .png, or one "
                          f"of {', '.join('.' + f for f in sorted(formats))}")
    # Two formats matplotlib lists but writes only with a program or a codec of its own: else an error once drawn.
    if suffix == "pgf" and not shutil.which(texsystem := rcParams["pgf.texsystem"]):
        raise OptionError(f"{named}: .pgf is written through TeX, and {texsystem} is not installed; give a .pdf or .svg")
    if suffix == "avif":
        from PIL import features

        if not features.check("avif"):
            raise OptionError(f"{named}: this Pillow writes no AVIF (Pillow 11.2 and later do); give a .png or .webp")
    return suffix or rcParams["savefig.format"]


def alignment_heatmaps(panels: dict[str, np.ndarray], path: str | Path, tick_labels: list[str] | None = None,
                       text_label: str = "text (caption)", option: str | None = None) -> Path:
    """One heat map per model (name -> cosine matrix), side by side; the matched pairs lie on the diagonal.
    ``text_label`` names the rows (the demo's are the images' captions). The figure takes its name once whole: a save
    cut short leaves the file as it was. ``option``: the flag that gave ``path``, named with it in an OptionError."""
    file_format = figure_format(path, option)
    # A Figure of its own, drawn by Agg when saved: no display is needed, and the caller's pyplot (its backend, a
    # notebook's inline one, and its open figures) is left as it was.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], panels.items()):
        image = ax.imshow(matrix, cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("image")
        ax.set_ylabel(text_label)
        if tick_labels is not None:
            ax.set_xticks(range(len(tick_labels)), tick_labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tick_labels)), tick_labels, fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.suptitle("cosine similarity of aligned text and image features")
    fig.tight_layout()
    with writing(path, flag=option), whole_output(path) as target:
        fig.savefig(target, dpi=120, format=file_format)  # the format named, not read from a temporary name's suffix
    return Path(path)


def pick_pairs(records: Sequence[Record], samples: int, seed: int = 0) -> list[Record]:
    """``samples`` of ``records`` drawn without replacement by ``seed``, kept in their order: the same pairs for every
    model given the same records and seed."""
    if not 2 <= samples <= len(records):
        raise OptionError(f"{samples} pairs asked for, of {len(records)}: a heat map compares from 2 pairs to as many "
                          "as there are")
    picked = np.random.default_rng(seed).choice(len(records), size=samples, replace=False)
    return [records[i] for i in sorted(picked)]


ROWS = ("text", "caption")


def row_records(records: Sequence[Record], rows: str = "text") -> list[Record]:
    """The records a heat map's pairs are drawn from, each with the text its row reads: its own (``rows="text"``), or
    its image's caption (``"caption"``, as the paper's Figure 4, whose captions ClipCap wrote), for those that have one."""
    if rows not in ROWS:
        raise OptionError(f"rows {rows!r}: give one of {', '.join(ROWS)}")
    if rows == "text":
        return list(records)
    # A caption of spaces is none: nothing for the row to read (a record's text of spaces is refused by the reader).
    return [dataclasses.replace(record, text=record.caption) for record in records
            if record.caption and record.caption.strip()]


def model_heatmaps(models: Mapping[str, str | Path], records: Sequence[Record], path: str | Path, samples: int = 16,
                   seed: int = 0, *, rows: str = "text", device: str | None = None, precision: str = "auto",
                   attention_backends: str | None = None, batch_size: int = 64, num_workers: int = 0,
                   progress: bool = False, option: str | None = None) -> dict[str, np.ndarray]:
    """Figure 4 for trained models (title -> model folder or hub name): the cosine similarity of each model's aligned
    text features (rows) against its image features (columns) for the :func:`pick_pairs` of ``records``, drawn side
    by side to ``path``. The rows read each record's text, or with ``rows="caption"`` its image's caption (records
    without one are not drawn). Returns the matrices (title -> (samples, samples)); pair i is row i and column i. A
    text-only or image-only baseline has features of one kind, nothing to compare: an OptionError. ``option``: the flag
    that gave ``path`` (``--output``), named with it where the figure cannot be written."""
    figure_format(path, option)  # before the models load
    from clfa.data.kept_pixels import KeptPixels
    from clfa.predict import Predictor, image_transforms

    pairs = pick_pairs(row_records(records, rows), samples, seed)
    kept = KeptPixels(image_transforms(models.values()))
    kept.decode(pairs)  # each image drawn decoded once for all the models, not once for each
    panels = {}
    for title, model in models.items():
        predictor = Predictor.from_pretrained(model, device=device, precision=precision, attention_backends=attention_backends)
        if len(kinds := predictor.model.config.modalities) < 2:
            raise OptionError(f"{model} ({title}): a {kinds[0]}-only model has {kinds[0]} features alone, none of the "
                              "other kind to compare them with; give models that read both text and image")
        features = predictor.run(pairs, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                 images=kept.images(pairs, predictor.transform))
        panels[title] = cosine_matrix(features["text_features"], features["image_features"])
        del predictor, features  # one model in memory at a time
    ticks = [str(pair.id) for pair in pairs] if samples <= _MOST_TICKS else None
    alignment_heatmaps(panels, path, tick_labels=ticks, text_label=rows, option=option)
    return panels
