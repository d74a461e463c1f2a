"""Predictor: uint8 batches normalised on the device give what the model gives on the image processor's own output."""

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from clfa import CLFAModel
from clfa.data.records import Record
from clfa.predict import Predictor


def test_predictions_equal_the_model_on_the_processors_pixels(tiny_models, tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                    fusion_heads=2, max_text_length=12, initializer_range=0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    processor = AutoImageProcessor.from_pretrained(tiny_models["image"])
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")

    texts = ["what a lovely day", "snow storm at night", "a photo of the sky"]
    images = [tiny_dataset / "images" / f"{i}.png" for i in (0, 5, 9)]
    enc = tokenizer(texts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    expected = model.eval()(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        pixel_values=processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"],
    ).logits.softmax(-1)
    assert (expected.max(-1).values - expected.min(-1).values).max() > 0.01  # the classes are told apart

    records = [Record(id=str(i), text=t, image=p) for i, (t, p) in enumerate(zip(texts, images))]
    batched = torch.from_numpy(predictor.run(records, batch_size=2, progress=False)["probabilities"])
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-6)
    for i, (text, image) in enumerate(zip(texts, images)):
        one = predictor.predict(text, image)
        assert one["label"] == ["negative", "positive"][int(expected[i].argmax())]
        torch.testing.assert_close(torch.tensor(list(one["probabilities"].values())), expected[i], rtol=0, atol=1e-5)
