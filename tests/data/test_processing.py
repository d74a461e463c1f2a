"""Records to tensors: pixels as the image processor makes them, and whole batches equal to sample-by-sample ones."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from clfa.data.image_cache import cached_images
from clfa.data.processing import CLFADataset, Collator, ImageTransform, stack
from clfa.data.registry import load_dataset

LABEL2ID = {"negative": 0, "positive": 1}


@pytest.fixture
def parts(tiny_models, tiny_dataset, tmp_path):
    records = load_dataset("jsonl", tiny_dataset)["train"]
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    g = torch.Generator().manual_seed(0)
    teacher = (torch.randn(len(records), 24, generator=g), torch.randn(len(records), 24, generator=g))
    cache = cached_images(records, transform, tmp_path / "cache", progress=False)
    return records, transform, tokenizer, teacher, cache


def one_by_one(dataset, indices):
    items = [dataset[i] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def assert_same_batches(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_normalised_pixels_equal_the_image_processor(tiny_models, tiny_dataset):
    processor = AutoImageProcessor.from_pretrained(tiny_models["image"])
    transform = ImageTransform(processor)
    image = Image.open(tiny_dataset / "images" / "3.png")
    expected = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    ours = transform.normalize(torch.from_numpy(transform.load(tiny_dataset / "images" / "3.png"))[None])
    torch.testing.assert_close(ours, expected.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["cache", "files"])
def test_a_whole_batch_equals_the_same_samples_one_by_one(parts, source):
    records, transform, tokenizer, teacher, cache = parts
    dataset = CLFADataset(records, tokenizer, transform, 12, LABEL2ID, cache if source == "cache" else None, teacher)
    indices = [7, 0, 31, 7, 46]  # any order, repeats allowed, as a sampler may give
    batch = dataset.__getitems__(indices)
    assert_same_batches(batch, one_by_one(dataset, indices))
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (5, 3, 16, 16)
    assert batch["labels"].tolist() == [LABEL2ID[records[i].label] for i in indices]
    assert torch.equal(batch["teacher_text_embeds"][2], teacher[0][31])
    assert torch.equal(batch["pixels"][1], torch.from_numpy(transform.load(records[0].image)))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_through_workers_and_wrappers(parts, workers):
    """Workers write batches straight into shared memory; a ConcatDataset hides __getitems__ and is stacked sample by
    sample: both give the batches a plain stack of the samples gives, in the sampler's order."""
    records, transform, tokenizer, teacher, cache = parts
    dataset = CLFADataset(records, tokenizer, transform, 12, LABEL2ID, cache, teacher)
    sampler = [[3, 1, 4, 1, 5, 9, 2, 6], [47, 0, 12]]
    expected = [one_by_one(dataset, indices) for indices in sampler]
    for source in (dataset, torch.utils.data.ConcatDataset([dataset])):
        loader = torch.utils.data.DataLoader(source, batch_sampler=sampler, num_workers=workers, collate_fn=stack)
        for got, want in zip(loader, expected, strict=True):
            assert_same_batches(got, want)
    floats = next(iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=Collator(transform))))
    assert "pixels" not in floats
    torch.testing.assert_close(floats["pixel_values"], transform.normalize(expected[0]["pixels"]), rtol=0, atol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_index_past_the_end_is_an_error_not_a_wrapped_row(parts, workers):
    records, transform, tokenizer, _, cache = parts
    dataset = CLFADataset(records, tokenizer, transform, 12, LABEL2ID, cache)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[0, len(records)]], num_workers=workers, collate_fn=stack)
    with pytest.raises(IndexError):
        next(iter(loader))


def test_cached_rows_are_copies_the_batch_can_own(parts):
    records, transform, tokenizer, _, cache = parts
    assert not cache.flags.writeable  # a read-only memory map
    batch = CLFADataset(records, tokenizer, transform, 12, LABEL2ID, cache).__getitems__([0, 1])
    batch["pixels"] += 1  # writable, and writing does not reach the cache
    assert np.array_equal(cache[0], transform.load(records[0].image))
