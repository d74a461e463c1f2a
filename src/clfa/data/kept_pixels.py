"""The pixels models read, made from images decoded once.

Readers decode every image under ``--skip-invalid``, and without it every image whose format the cheap check cannot
verify (not PNG or JPEG). :meth:`KeptPixels.keep`, given to a reader as its ``decoded`` hook, makes each such image into
the uint8 pixels the model reads; :meth:`KeptPixels.images` hands them to ``Predictor.run`` as the records' images,
and the images the check did not decode are decoded as their batch is built, as they always were. The commands keep
pixels only where the batches are built in this process (``--num-workers 0``): loader workers make them side by side,
sooner than :meth:`KeptPixels.keep` makes them one after the other while the data is read (a 600 x 450 JPEG decodes in
1 ms, and is resized in 8 ms more).

Memory: 150 KB an image at 224 x 224 (360 MB for MMSD's 2,409 test pairs), up to ``budget`` bytes (512 MiB, some 3,500
images at 224 x 224). Past it nothing more is kept, and those images are decoded a second time when their batch is
built: a file of any size is read in bounded memory.

``clfa heatmap`` draws a few pairs of a split: it keeps nothing while reading, since making the pixels of every record
costs more than decoding the few drawn a second time (a 12-megapixel JPEG decodes in 0.14 s, and is made into 224 x 224
pixels in 0.19 s more). It decodes each pair drawn once for all its models (:meth:`KeptPixels.decode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from clfa.data.custom import check_image_file
from clfa.data.records import DataError

BUDGET = 2**29  # a process that starts its loader workers by spawn (macOS, Windows) copies them to each


class KeptPixels:
    """The pixels that ``transforms``, the ImageTransforms of the models that will read them, make of decoded images."""

    def __init__(self, transforms: Sequence, budget: int = BUDGET):
        self.transforms = {transform.fingerprint(): transform for transform in transforms}  # which names their pixels
        self.budget, self.nbytes = budget, 0
        self.pixels: dict[tuple[str, Path], np.ndarray] = {}  # by (transform fingerprint, image path)

    def keep(self, path: Path, image: Image.Image) -> None:
        """The readers' ``decoded`` hook: ``image``, decoded from ``path``, made into each model's pixels."""
        for fingerprint, transform in self.transforms.items():
            height, width = transform.size
            if (fingerprint, Path(path)) in self.pixels or self.nbytes + 3 * height * width > self.budget:
                continue
            try:
                pixels = transform.load(path, image=image)
            except DataError:  # left to its batch, which names the problem as it always has
                continue
            self.pixels[fingerprint, Path(path)] = pixels
            self.nbytes += pixels.nbytes

    def decode(self, records: Sequence) -> None:
        """Makes the pixels of the images of ``records`` not kept yet, each decoded once for all the models."""
        for path in dict.fromkeys(Path(record.image) for record in records):
            if all((fingerprint, path) in self.pixels for fingerprint in self.transforms):
                continue
            # An image the check finds a problem in is left to its batch, which names the problem.
            check_image_file(path, decode=True, decoded=self.keep)

    def images(self, records: Sequence, transform) -> Sequence[np.ndarray]:
        """The pixels ``transform`` makes of each record's image, for ``Predictor.run``'s ``images``."""
        fingerprint = transform.fingerprint()
        return _Images(records, transform, {path: pixels for (made_by, path), pixels in self.pixels.items()
                                            if made_by == fingerprint})


class _Images(Sequence):
    """Kept pixels as they are; the others decoded as they are read (in a loader worker, where there are some)."""

    def __init__(self, records: Sequence, transform, kept: dict[Path, np.ndarray]):
        self.records, self.transform, self.kept = records, transform, kept

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray:
        record = self.records[i]
        pixels = self.kept.get(Path(record.image))
        return pixels if pixels is not None else self.transform.load(record.image, record.source)
