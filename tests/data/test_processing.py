"""Records to tensors: pixels as the image processor makes them, and whole batches that are the samples themselves."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from clfa.data.image_cache import cached_images
from clfa.data.processing import CLFADataset, Collator, ImageTransform, SampleBatch, load_image_processor, stack, tokenize
from clfa.data.records import DataError
from clfa.data.registry import load_dataset

LABEL2ID = {"negative": 0, "positive": 1}
MAX_LENGTH = 12


@pytest.fixture
def parts(tiny_models, tiny_dataset, tmp_path):
    records = load_dataset("jsonl", tiny_dataset)["train"]
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    g = torch.Generator().manual_seed(0)
    teacher = (torch.randn(len(records), 24, generator=g), torch.randn(len(records), 24, generator=g))
    cache = cached_images(records, transform, tmp_path / "cache", progress=False)
    return records, transform, tokenizer, teacher, cache


def expected_batch(parts, indices) -> dict[str, torch.Tensor]:
    """The batch built from the sources themselves, not from the dataset under test."""
    records, transform, tokenizer, teacher, _ = parts
    enc = tokenize(tokenizer, [records[i].text for i in indices], MAX_LENGTH)
    return {
        **enc,
        "pixels": torch.stack([torch.from_numpy(transform.load(records[i].image)) for i in indices]),
        "labels": torch.tensor([LABEL2ID[records[i].label] for i in indices]),
        "teacher_text_embeds": teacher[0][indices],
        "teacher_image_embeds": teacher[1][indices],
    }


def dataset(parts, source="cache") -> CLFADataset:
    records, transform, tokenizer, teacher, cache = parts
    return CLFADataset(records, tokenizer, transform, MAX_LENGTH, LABEL2ID, {"cache": cache, "files": None, "list": list(cache)}[source], teacher)


def assert_same_batches(got: dict, want: dict):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("settings", [{}, {"do_normalize": False}, {"do_rescale": False, "do_normalize": False},
                                      {"rescale_factor": 1 / 127.5, "image_mean": [1, 1, 1], "image_std": [1, 1, 1]}])
def test_normalised_pixels_equal_the_image_processor(tiny_models, tiny_dataset, settings):
    processor = AutoImageProcessor.from_pretrained(tiny_models["image"], **settings)
    transform = ImageTransform(processor)
    image = Image.open(tiny_dataset / "images" / "3.png")
    expected = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    ours = transform.normalize(torch.from_numpy(transform.load(tiny_dataset / "images" / "3.png"))[None])
    torch.testing.assert_close(ours, expected.float(), rtol=0, atol=1e-6)


def test_the_cache_fingerprint_names_the_image_processor_backend(tiny_models):
    processor = AutoImageProcessor.from_pretrained(tiny_models["image"], backend="pil")
    other_backend = type("TorchvisionLike", (type(processor),), {"to_dict": lambda self: processor.to_dict()})(**processor.to_dict())
    assert other_backend.to_dict() == processor.to_dict()  # what the settings alone cannot tell apart
    assert ImageTransform(other_backend).fingerprint() != ImageTransform(processor).fingerprint()
    assert ImageTransform(processor).fingerprint() == ImageTransform(load_image_processor(tiny_models["image"])).fingerprint()


def test_an_image_that_cannot_be_loaded_is_named_once(tiny_models, tmp_path):
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    with pytest.raises(DataError) as missing:
        transform.load(tmp_path / "nope.png", source="a.jsonl:3")
    assert str(missing.value) == f"{tmp_path / 'nope.png'}: missing image file (record a.jsonl:3)"
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad.png: unreadable image file \(UnidentifiedImageError: "):
        transform.load(tmp_path / "bad.png")
    (tmp_path / "empty.png").write_bytes(b"")  # as the readers' checks name it, not as a format Pillow does not know
    with pytest.raises(DataError, match=r"empty.png: unreadable image file \(an empty file, 0 bytes\)"):
        transform.load(tmp_path / "empty.png")


@pytest.mark.parametrize("source", ["cache", "files", "list"])
def test_a_whole_batch_holds_the_samples_in_the_samplers_order(parts, source):
    data = dataset(parts, source)
    indices = [7, 0, 31, 7, 46]  # any order, repeats allowed, as a sampler may give
    batch = data.__getitems__(indices)
    assert isinstance(batch, SampleBatch) and len(batch) == len(indices)
    assert_same_batches(stack(batch), expected_batch(parts, indices))
    for position, i in enumerate(indices):  # each element is the sample __getitem__ gives
        sample, alone = batch[position], data[i]
        assert sample.keys() == alone.keys() and all(torch.equal(sample[k], alone[k]) for k in alone)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_through_workers_wrappers_and_other_collate_functions(parts, workers):
    """Workers write batches straight into shared memory; ConcatDataset hides __getitems__; Subset passes it on;
    the default collate function and the Trainer's take the samples one by one: all give the same batches."""
    from transformers import default_data_collator

    data = dataset(parts)
    sampler = [[3, 1, 4, 1, 5, 9, 2, 6], [47, 0, 12]]
    expected = [expected_batch(parts, indices) for indices in sampler]
    setups = [(data, stack), (torch.utils.data.ConcatDataset([data]), stack), (torch.utils.data.Subset(data, range(len(data))), stack),
              (data, torch.utils.data.default_collate), (data, default_data_collator)]
    for source, collate in setups:
        loader = torch.utils.data.DataLoader(source, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
        for got, want in zip(loader, expected, strict=True):
            assert_same_batches(got, want)
    floats = next(iter(torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=workers, collate_fn=Collator(parts[1]))))
    assert "pixels" not in floats
    torch.testing.assert_close(floats["pixel_values"], parts[1].normalize(expected[0]["pixels"]), rtol=0, atol=0)


def test_stack_dataset_pairs_samples_not_fields(parts):
    data = dataset(parts)
    pairs = torch.utils.data.StackDataset(data, data).__getitems__([5, 2, 9, 1])  # 4 samples, like the 4+ fields
    assert len(pairs) == 4 and all(torch.equal(a["input_ids"], expected_batch(parts, [i])["input_ids"][0]) for (a, _), i in zip(pairs, [5, 2, 9, 1]))


def gathered_where(samples) -> dict[str, torch.Tensor]:
    return {**stack(samples), "in_shared_memory": torch.tensor(samples.tensors["pixels"].is_shared())}


def test_whole_batches_are_taken_as_they_are_and_gathered_into_shared_memory_by_workers(parts):
    batch = dataset(parts).__getitems__([1, 2, 3])
    assert stack(batch)["pixels"] is batch.tensors["pixels"]  # not split into samples and stacked again
    assert not batch.tensors["pixels"].is_shared()
    worker_batch = next(iter(torch.utils.data.DataLoader(dataset(parts), batch_sampler=[[1, 2, 3]], num_workers=1, collate_fn=gathered_where)))
    assert worker_batch["in_shared_memory"].item()
    assert_same_batches({k: v for k, v in worker_batch.items() if k != "in_shared_memory"}, expected_batch(parts, [1, 2, 3]))


def test_a_sample_batch_rebuilt_from_its_samples_is_still_a_batch(parts):
    batch = dataset(parts).__getitems__([4, 0, 8])
    rebuilt = type(batch)([sample for sample in batch])  # what pinning memory does to a sequence
    assert len(rebuilt) == 3 and rebuilt.tensors is None
    assert_same_batches(stack(rebuilt), expected_batch(parts, [4, 0, 8]))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_index_past_the_end_is_an_error_not_a_wrapped_row(parts, workers):
    data = dataset(parts)
    loader = torch.utils.data.DataLoader(data, batch_sampler=[[0, len(data)]], num_workers=workers, collate_fn=stack)
    batches = iter(loader)
    with pytest.raises(IndexError, match=str(len(data))):
        next(batches)
    if workers:  # now, not by the garbage collector in a later test, which waits 5 s a worker
        batches._shutdown_workers()


def test_cached_rows_are_copies_the_batch_can_own(parts):
    cache = parts[4]
    assert not cache.flags.writeable  # a read-only memory map
    batch = stack(dataset(parts).__getitems__([0, 1]))
    batch["pixels"] += 1  # writable, and writing does not reach the cache
    assert np.array_equal(cache[0], parts[1].load(parts[0][0].image))


def test_loader_workers_started_by_spawn_map_the_image_cache_not_receive_a_copy(parts):
    """Spawn (macOS, Windows) sends each worker the dataset pickled, the same way: the cache of a dataset is gigabytes."""
    from multiprocessing.reduction import ForkingPickler

    cache = parts[4]
    sent = ForkingPickler.dumps(dataset(parts))
    assert len(sent) - len(ForkingPickler.dumps(dataset(parts, "files"))) < cache.nbytes / 4  # what the images add
    received = ForkingPickler.loads(sent)
    assert isinstance(received.images, np.memmap) and received.images.filename == cache.filename
    assert not received.images.flags.writeable
    assert_same_batches(stack(received.__getitems__([2, 0, 5])), expected_batch(parts, [2, 0, 5]))
    in_memory = dataset(parts, "list")  # not a file: sent as it is
    images = ForkingPickler.loads(ForkingPickler.dumps(in_memory)).images
    assert len(images) == len(cache) and all(np.array_equal(a, b) for a, b in zip(images, cache))


def test_workers_are_sent_the_transform_without_its_device_copies(tiny_models):
    """The copies of mean and std made for the device the batches are normalised on stay in the main process: on a GPU,
    pickled to each loader worker, they would set up CUDA there."""
    from multiprocessing.reduction import ForkingPickler

    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    pixels = torch.randint(0, 256, (2, 3, *transform.size), dtype=torch.uint8)
    expected = transform.normalize(pixels)
    transform.normalize(pixels.to("meta"))  # as a GPU's batch would, with a device at hand here
    received = ForkingPickler.loads(ForkingPickler.dumps(transform))
    assert transform._stats and received._stats == {}
    torch.testing.assert_close(received.normalize(pixels), expected, rtol=0, atol=0)


def test_a_16_bit_grey_image_reads_as_its_8_bit_greys_not_white(tiny_models, tmp_path):
    """Pillow opens a 16-bit PNG as mode I;16 (I in Pillow 10), whose convert("RGB") clips 0-65535 at 255: 99% of a
    ramp was white."""
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    ramp = np.linspace(0, 255, 16 * 16).round().astype(np.uint8).reshape(16, 16)
    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(ramp).save(tmp_path / "grey8.png")
    grey8 = transform.load(tmp_path / "grey8.png")
    np.testing.assert_array_equal(transform.load(tmp_path / "grey16.png"), grey8)  # mode I;16, or I in Pillow 10
    # Decoded already, in the 32-bit mode I (Pillow 10's, or an image built in memory): taken as 16-bit past 255.
    as_i = Image.fromarray(ramp.astype(np.int32) * 257, "I")
    np.testing.assert_array_equal(transform.load_image(as_i), grey8)
    np.testing.assert_array_equal(transform.load_image(Image.fromarray(ramp.astype(np.int32), "I")), grey8)

    # A tRNS grey, 5000, shares its high byte with 5001: only the pixels of 5000 are transparent, on white.
    values = np.full((16, 16), 5001, dtype=np.uint16)
    values[:, :4] = 5000
    Image.fromarray(values).save(tmp_path / "grey16-trns.png", transparency=5000)
    expected = np.full((16, 16), 5001 >> 8, dtype=np.uint8)
    expected[:, :4] = 255
    np.testing.assert_array_equal(transform.load(tmp_path / "grey16-trns.png"), transform.load_image(Image.fromarray(expected)))


def test_an_image_reads_as_a_viewer_shows_it_turned_by_its_exif_orientation_and_transparency_on_white(tiny_models, tmp_path):
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left, as phone cameras save a photo taken upright
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    np.testing.assert_array_equal(transform.load(tmp_path / "turned.png"), transform.load_image(upright))
    # Transparent pixels that hold black, as most tools save them: white, as transformers' convert_to_rgb makes them.
    clear = np.zeros((40, 24, 4), dtype=np.uint8)
    Image.fromarray(clear).save(tmp_path / "clear.png")
    white = Image.new("RGB", (24, 40), (255, 255, 255))
    np.testing.assert_array_equal(transform.load(tmp_path / "clear.png"), transform.load_image(white))
    Image.fromarray(clear).convert("P").save(tmp_path / "clear-palette.png", transparency=0)
    np.testing.assert_array_equal(transform.load(tmp_path / "clear-palette.png"), transform.load_image(white))
    # In memory: premultiplied alpha, and a palette whose colours carry their alpha.
    np.testing.assert_array_equal(transform.load_image(Image.fromarray(clear).convert("RGBa")), transform.load_image(white))
    # Luminance with premultiplied alpha, which Pillow converts to LA alone: half-transparent black on white.
    half = np.full((40, 24, 2), (0, 128), dtype=np.uint8)
    grey = np.full((40, 24), 127, dtype=np.uint8)
    np.testing.assert_array_equal(transform.load_image(Image.frombytes("La", (24, 40), half.tobytes())),
                                  transform.load_image(Image.fromarray(grey)))
    palette = Image.new("P", (24, 40))
    palette.putpalette([90, 20, 30, 0] * 256, "RGBA")
    np.testing.assert_array_equal(transform.load_image(palette), transform.load_image(white))


def test_an_image_whose_exif_cannot_be_parsed_reads_as_a_viewer_shows_it(tiny_models, tmp_path):
    """Its pixels are whole, and the data checks pass it: refused as it was read, it stopped a run at its batch."""
    from clfa.data.custom import check_image_file

    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8))
    upright.save(tmp_path / "garbled.png", exif=b"not a TIFF header")
    assert check_image_file(tmp_path / "garbled.png", decode=True) is None
    np.testing.assert_array_equal(transform.load(tmp_path / "garbled.png"), transform.load_image(upright))
    # An orientation beside a tag whose value has the wrong type (a width as text): turned all the same.
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "camera"  # orientation; make
    raw = exif.tobytes()
    order = "big" if raw[6:8] == b"MM" else "little"
    raw = raw.replace((0x010F).to_bytes(2, order), (0x0100).to_bytes(2, order))  # make -> image width, still text
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", exif=raw, quality=100, subsampling=0)
    with Image.open(tmp_path / "turned.jpg") as stored:
        expected = transform.load_image(Image.fromarray(np.asarray(stored.transpose(Image.Transpose.ROTATE_270))))
    np.testing.assert_array_equal(transform.load(tmp_path / "turned.jpg"), expected)


def test_pillow_warns_of_no_size_or_exif_of_an_image_it_reads(tiny_models, tmp_path, monkeypatch):
    """Its warnings name no file, and the pixels are read all the same: they were noise, once in each process and
    loader worker, in every command that reads images."""
    import warnings

    from clfa.data.commands import inspect_image
    from clfa.data.custom import check_image_file
    from clfa.data.records import Record

    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
        tmp_path / "exif.jpg", exif=b"Exif\0\0II*\0\x08\0\0\0" + bytes(range(256)), quality=100)  # EXIF Pillow cannot parse
    large = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    large.save(tmp_path / "large.png")
    with pytest.warns(UserWarning, match=r"(?i)corrupt EXIF"), Image.open(tmp_path / "exif.jpg") as stored:
        expected = [transform.load_image(stored), transform.load_image(large)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: past the size Pillow warns at, not the one it refuses
    with pytest.warns(Image.DecompressionBombWarning), Image.open(tmp_path / "large.png"):
        pass
    records = [Record(str(i), "a cat", tmp_path / name) for i, name in enumerate(("exif.jpg", "large.png"))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for record in records:
            assert check_image_file(record.image) is check_image_file(record.image, decode=True) is None
            assert inspect_image(record.image) is None
        read = [transform.load(record.image) for record in records]
        cached = cached_images(records, transform, tmp_path / "cache", num_workers=2, progress=False)
    assert [str(warning.message) for warning in caught] == []
    for pixels, row, wanted in zip(read, cached, expected):
        np.testing.assert_array_equal(pixels, wanted)
        np.testing.assert_array_equal(row, wanted)
    Image.new("RGB", (15, 14)).save(tmp_path / "larger.png")  # 210 pixels, past twice the limit: refused, and named
    with pytest.raises(DataError, match=r"larger.png: unreadable image file \(DecompressionBombError: Image size \(210 pixels"):
        transform.load(tmp_path / "larger.png")
