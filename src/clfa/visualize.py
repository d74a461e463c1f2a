"""Figures: the alignment heat map of the paper's Figure 4."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cosine_matrix(text_features: np.ndarray, image_features: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarity of every text feature (rows) with every image feature (columns)."""
    t = text_features / np.linalg.norm(text_features, axis=1, keepdims=True).clip(1e-12)
    i = image_features / np.linalg.norm(image_features, axis=1, keepdims=True).clip(1e-12)
    return t @ i.T


def alignment_heatmaps(panels: dict[str, np.ndarray], path: str | Path, tick_labels: list[str] | None = None) -> Path:
    """One heat map per model (name -> cosine matrix), side by side; the matched pairs lie on the diagonal."""
    # A Figure of its own, drawn by Agg when saved: no display is needed, and the caller's pyplot (its backend, a
    # notebook's inline one, and its open figures) is left as it was.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], panels.items()):
        image = ax.imshow(matrix, cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("image")
        ax.set_ylabel("text (caption)")
        if tick_labels is not None:
            ax.set_xticks(range(len(tick_labels)), tick_labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tick_labels)), tick_labels, fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.suptitle("cosine similarity of aligned text and image features")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
