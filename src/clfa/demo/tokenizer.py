"""A word-level BERT tokenizer for the demo world.

The demo cannot download ``bert-base-uncased``'s vocabulary, and a 30k-row embedding table would dominate
the tiny demo models anyway. Every demo word is its own WordPiece entry, so nothing maps to [UNK] and
the text students and the teacher see whole words.
"""

from __future__ import annotations

from pathlib import Path

from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from clfa.demo.world import demo_vocabulary

SPECIAL_TOKENS: list[str] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 77  # CLIP's text length: the same limit the real teacher and the students use


def build_tokenizer(out_dir: str | Path, model_max_length: int = MAX_LENGTH) -> PreTrainedTokenizerFast:
    """Write ``vocab.txt`` and the tokenizer files into ``out_dir``; ``AutoTokenizer`` loads them from there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    demo_words = demo_vocabulary()
    words = SPECIAL_TOKENS + demo_words
    (out_dir / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    vocab = {word: i for i, word in enumerate(words)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=model_max_length)
    broken = [w for w in demo_words if tokenizer.tokenize(w) != [w]]
    if broken:  # a word the basic tokenizer splits differently would reach the models as [UNK]
        raise ValueError(f"demo words the tokenizer does not keep whole: {broken}")
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def texts_with_unk(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[str]:
    """The texts among ``texts`` that contain a token the tokenizer maps to [UNK] (should be none)."""
    unk = tokenizer.unk_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [text for text, row in zip(texts, ids) if unk in row]


__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "texts_with_unk"]
