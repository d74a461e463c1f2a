"""The alignment heat map of the paper's Figure 4, drawn without a display."""

import numpy as np
from PIL import Image

from clfa.visualize import alignment_heatmaps, cosine_matrix


def test_the_heat_map_is_drawn_without_touching_the_callers_pyplot(tmp_path):
    """It switched matplotlib to Agg for the whole process: a notebook's inline figures stopped showing after it."""
    import matplotlib
    import matplotlib.pyplot as plt

    was = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        figure = plt.figure()
        rng = np.random.default_rng(0)
        text, image = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
        matrix = cosine_matrix(text, image)
        np.testing.assert_allclose(np.diag(cosine_matrix(text, text)), 1.0)
        assert matrix.shape == (6, 6) and np.abs(matrix).max() <= 1
        path = alignment_heatmaps({"CLFA": matrix, "BERT+ViT": matrix.T}, tmp_path / "heat.png", tick_labels=list("abcdef"))
        assert matplotlib.get_backend() == "svg" and plt.fignum_exists(figure.number)
    finally:
        plt.close("all")
        plt.switch_backend(was)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (int(2 * 4.2 * 120), 4 * 120)
