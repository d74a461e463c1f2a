"""KeptPixels: the pixels models read, made from the images a data check decodes, within a bound on memory."""

from __future__ import annotations

import numpy as np

from clfa.data.custom import read_custom
from clfa.data.kept_pixels import KeptPixels
from clfa.data.processing import ImageTransform, load_image_processor
from conftest import write_pairs


def test_past_its_budget_an_image_is_decoded_again_for_its_batch(tiny_models, tmp_path, decodes):
    """Memory stays bounded on a file of any size: the images checked past the budget are decoded a second time."""
    transform = ImageTransform(load_image_processor(tiny_models["image"]))
    height, width = transform.size
    kept = KeptPixels([transform], budget=2 * 3 * height * width)
    records = read_custom(write_pairs(tmp_path / "pairs.jsonl", ["a.png", "b.png", "c.png"]), check_images="decode",
                          decoded=kept.keep)
    assert decodes.taken() == {"a.png": 1, "b.png": 1, "c.png": 1}
    assert kept.nbytes == 2 * 3 * height * width
    expected = [transform.load(record.image) for record in records]
    decodes.taken()
    images = kept.images(records, transform)
    for pixels, made in zip(images, expected, strict=True):
        np.testing.assert_array_equal(pixels, made)
    assert decodes.taken() == {"c.png": 1}
