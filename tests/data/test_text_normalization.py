"""``--normalize-text``: the MMSD release's placeholders rewritten as words a pretrained tokenizer knows
(clfa.data.text_normalization)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "raw,normalized",
    [
        ("thanks <user> for <num> hours # fun  emoji_15 emoji_15 <url>", "thanks @user for 0 hours #fun emoji emoji http"),
        ("# # funnyquotes #  4 is the best", "# #funnyquotes #4 is the best"),
        ("link:<url>… and <URL>", "link: http … and http"),
        ("<num>pts by x<User> in got<num>", "0 pts by x @user in got 0"),
        ("#", "#"),
        ("emoji_12x stays, so does myemoji_3", "emoji_12x stays, so does myemoji_3"),
        ("  spaces \t and\nnewlines  ", "spaces and newlines"),
        ("nothing to do", "nothing to do"),
        ("#\u00a0fun and #\nwin", "#fun and #win"),
    ],
)
def test_normalize_tweet(raw, normalized):
    from clfa.data.text_normalization import normalize_tweet

    assert normalize_tweet(raw) == normalized
    assert normalize_tweet(normalized) == normalized  # idempotent: a model trained on rewritten texts rewrites again
