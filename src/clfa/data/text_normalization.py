"""Optional rewriting of the placeholders in the MMSD / MMSD2.0 release texts (``--normalize-text``).

The release replaced URLs, user mentions, numbers and emojis with placeholders and split hashtags into
``# word``. Pretrained tokenizers cut ``<url>`` into ``<``, ``url``, ``>`` and ``emoji_689`` into several
meaningless pieces, so this rewrites them into ordinary words a pretrained model has seen. It is off by
default because the paper's numbers use the texts as released.
"""

from __future__ import annotations

import re

# Each rule is applied in this order; every replacement is a plain word so the result tokenises cleanly.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"<url>", re.IGNORECASE), " http "),  # the word twitter-pretrained models use for links
    (re.compile(r"<user>", re.IGNORECASE), " @user "),  # likewise for mentions
    (re.compile(r"<num>", re.IGNORECASE), " 0 "),  # any digit reads as "a number" to a tokenizer
    (re.compile(r"\bemoji_\d+\b"), " emoji "),  # the emoji ids are not published, so keep only "an emoji here"
    # "# word" -> "#word": a hashtag is one unit again. Any whitespace, as the last rule collapses any: a "#" before a
    # newline or a no-break space would otherwise be glued only on a second pass.
    (re.compile(r"#\s+(?=\w)"), "#"),
)
_SPACES = re.compile(r"\s+")


def normalize_tweet(text: str) -> str:
    """Rewrite the MMSD placeholders; everything else is left as it is.

    Exactly, in this order:

    * ``<url>`` -> ``http``, ``<user>`` -> ``@user``, ``<num>`` -> ``0`` (placeholders matched in any case,
      wherever they occur, also glued to other characters);
    * every ``emoji_<digits>`` word -> ``emoji`` (one per original emoji, so repetition is kept);
    * ``#`` followed by whitespace and a word character -> ``#`` glued to that word (``# funny`` ->
      ``#funny``; a lone ``#`` or ``# #tag`` keeps its first ``#`` as it is);
    * finally every run of whitespace becomes one space and the ends are stripped.

    >>> normalize_tweet("thanks <user> for <num> hours # fun  emoji_15 emoji_15 <url>")
    'thanks @user for 0 hours #fun emoji emoji http'
    """
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip()
