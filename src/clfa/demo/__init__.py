"""An offline demo: a synthetic image+text sarcasm world, a word-level tokenizer for it, and a small CLIP
teacher trained on it, so that CLFA can be trained and compared end to end without downloads."""
