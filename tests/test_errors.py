"""The one-line messages of the errors that are a user's input (clfa.errors)."""

from __future__ import annotations

import pytest
import torch

from clfa.data.records import DataError
from clfa.errors import message


class _BrokenImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise DataError("unreadable image file 3.png", file="test.jsonl", line=index + 1)


def test_an_error_raised_in_a_loader_worker_is_its_own_one_line_message():
    batches = iter(torch.utils.data.DataLoader(_BrokenImages(), num_workers=1))
    with pytest.raises(DataError) as err:
        next(batches)
    batches._shutdown_workers()  # now, not by the garbage collector in a later test, which waits 5 s a worker
    assert "Traceback" in str(err.value)  # as the DataLoader re-raises it
    assert message(err.value) == "test.jsonl:1: unreadable image file 3.png"
    assert message(DataError("no pairs to predict", file="in.jsonl")) == "in.jsonl: no pairs to predict"
