"""Apply a trained CLFA model to new image+text pairs, from Python or the command line.

    >>> from clfa.predict import Predictor
    >>> predictor = Predictor.from_pretrained("runs/clfa")
    >>> predictor.predict("what a lovely day", "photo.jpg")
    {'label': 'sarcastic', 'probabilities': {'not_sarcastic': 0.08, 'sarcastic': 0.92}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig

from clfa.attention_backends import attention_backends, parse_attention_backends
from clfa.configuration import CLFAConfig, label_problem
from clfa.data.processing import BlankImages, CLFADataset, ImageTransform, load_image_processor, stack, tokenize
from clfa.data.records import DataError, Record, blank
from clfa.data.text_normalization import normalize_tweet
from clfa.errors import OptionError, first_line
from clfa.hub import MODEL_HINT as _HINT, trained_model_location
from clfa.modeling import CLFAModel, first_non_finite_weight, reads_trailing_padding
from clfa.options import progress_bars
from clfa.precision import autocast, resolve_precision
from clfa.prediction_files import labelled
from clfa.run_lock import training_now


def _device(name: str | torch.device | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type not in ("cpu", "cuda"):  # the kinds prediction is built and tested for
        raise OptionError(f"--device {name}: prediction runs on cpu or cuda (cuda:1, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {name}: no CUDA GPU is available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise OptionError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return device


logger = logging.getLogger(__name__)


def _clfa_config(path: str, local: bool) -> CLFAConfig:
    """The config of the model at ``path``, which must be a CLFA model: another type would load with random weights
    and predict LABEL_0 / LABEL_1."""
    try:
        # Its labels as written: once read, a config without them has LABEL_0, LABEL_1 in their place.
        settings, _ = PreTrainedConfig.get_config_dict(path)
        if settings.get("model_type") == CLFAConfig.model_type and (problem := label_problem(settings)):
            raise OptionError(problem)
        config = AutoConfig.from_pretrained(path)
    except OSError as err:  # a local config.json that is not JSON; or not on disk and not on the hub either
        where = "cannot read its config.json" if local else "no such folder, nor a model the hub gave"
        raise OptionError(f"{path}: {where} ({first_line(err)}){'' if local else _HINT}") from None
    except OptionError as err:  # a setting no CLFA model has (CLFAConfig names it)
        raise OptionError(f"{path}: its config.json: {err}") from None
    except ValueError as err:  # a config of a type transformers does not know
        raise OptionError(f"{path}: not a CLFA model ({first_line(err)}){_HINT}") from None
    if not isinstance(config, CLFAConfig):
        raise OptionError(f"{path}: a '{config.model_type}' model, not a CLFA model{_HINT}")
    return config


def _array_image(array: np.ndarray) -> Image.Image:
    """A numpy image as PIL reads it: PIL would take other dtypes and layouts to a black or garbled image, or fail
    with a message about its own modes."""
    if array.dtype != np.uint8:
        scale = " (values in [0, 1]: multiply by 255 and round first)" if array.dtype.kind == "f" else ""
        raise TypeError(f"a numpy image must be uint8 with values 0-255, not {array.dtype}{scale}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or 0 in array.shape:
        layout = "; channels come last" if array.ndim == 3 and array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"a numpy image must be (H, W), (H, W, 3) or (H, W, 4), not {array.shape}{layout}")
    return Image.fromarray(array)


def _settle_normalization(config: CLFAConfig, path: str, processing: Path | str, local: bool) -> None:
    """Whether training rewrote the texts (--normalize-text), for a config.json saved before it recorded that (read
    as None): taken as False, a rewriting model would be fed raw texts. The run's metrics.json holds the data options
    it trained with; without one, nothing is known, and texts are passed on as given."""
    if config.normalize_text is not None:
        return
    try:
        options = json.loads((Path(processing) / "metrics.json").read_text())["data_options"] if local else None
        config.normalize_text = bool(options.get("normalize_text"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        logger.warning(f"{path}: neither its config.json nor its run's metrics.json records whether its training texts "
                       "were rewritten (--normalize-text); texts are passed to it as given")


def _broken_json(folder: Path) -> str | None:
    """What is wrong with the first of the tokenizer's and image processor's JSON files in ``folder`` that is cut short
    or holds no object of settings, or None."""
    for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "preprocessor_config.json"):
        try:
            settings = json.loads((folder / name).read_bytes())
        except FileNotFoundError:
            continue
        except json.JSONDecodeError as err:
            return f"{folder / name}: not whole JSON ({err.msg}: line {err.lineno} column {err.colno})"
        except (OSError, ValueError) as err:  # not UTF-8, or not readable
            return f"{folder / name}: cannot be read ({first_line(err)})"
        if not isinstance(settings, dict):
            kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(settings), "number")
            return f"{folder / name}: a JSON {kind}, not an object of settings"
    return None


def _holds_words(tokenizer) -> bool:
    """Whether a loaded tokenizer has a vocabulary. Without its file (tokenizer.json, vocab.txt, spiece.model, ...)
    transformers builds one of the special tokens alone, perhaps with a word marker such as "▁", and every word
    becomes unknown without a word said. Tokenizers of bytes or characters (ByT5, CANINE) have no such file, so the
    tokens are what is checked: one at least must hold a letter or digit."""
    specials = set(tokenizer.all_special_tokens)
    if len(tokenizer) - len(specials) > 1000:  # a vocabulary, and CANINE's 1.1 million characters are not listed
        return True
    return any(any(char.isalnum() for char in token) for token in tokenizer.get_vocab() if token not in specials)


def _processing_folder(folder: Path) -> Path:
    """The folder that holds the tokenizer and image processor of the model in ``folder``: the folder itself, or for a
    Trainer checkpoint (which holds weights only) the run folder around it."""
    if folder.resolve().parent.name == "checkpoints" and not (folder / "tokenizer_config.json").is_file():
        return folder.resolve().parent.parent
    return folder


def image_transforms(models: Iterable[str | Path]) -> list[ImageTransform]:
    """The image transforms of the models :meth:`Predictor.from_pretrained` loads from ``models``, their weights left
    unread; none of a model whose image processor does not load (from_pretrained then names the problem)."""
    transforms = []
    for model in models:
        try:
            path, local = trained_model_location(model)
            transforms.append(ImageTransform(load_image_processor(_processing_folder(Path(path)) if local else path)))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return transforms


def unfinished_run(folder: Path) -> Path | None:
    """The last checkpoint of the run in ``folder``, where that run has not written its model and metrics.json
    (still training, stopped, or cut short while writing them); else None."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = folder / "checkpoints"
    if (folder / "metrics.json").is_file() or not checkpoints.is_dir():
        return None
    return Path(last) if (last := get_last_checkpoint(str(checkpoints))) else None


def unfinished_hint(last: Path) -> str:
    # A --resume of a run still going would be a second run in its folder (and is refused): it is waited for.
    if training_now(last.parent.parent):
        return (f"; it is still training: give its last checkpoint, {last} (removed once newer ones are saved, unless it is "
                "the best so far), or wait for the run to end")
    return f"; give its last checkpoint, {last}, or finish the run (clfa train ... --resume)"


def _weight_name(key) -> str:
    """A weight named in a loading report: mis-shaped ones come as (name, shape in the file, shape of the config)."""
    if isinstance(key, tuple):
        name, stored, built = key
        return f"{name}, {list(stored)} in the file, {list(built)} by the config"
    return key


def _missing_files(folder: Path, processing: Path) -> list[str]:
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):  # or shards
        missing.append("model.safetensors")
    missing += [name for name in ("tokenizer_config.json", "preprocessor_config.json") if not (processing / name).is_file()]
    return missing


def _checked_records(records, image_paths: bool = True) -> list[Record] | tuple[Record, ...]:
    """``records`` as the batch methods take them, or a TypeError that says what they are given instead: one Record,
    other objects or an in-memory image would otherwise fail deep in the data loader or in PIL. An iterable that is
    not a list (a generator) is read into one: the results are matched to the records by position. ``image_paths``:
    whether the images are read from the records' paths (not when they are given, or the model reads none)."""
    if isinstance(records, Record):
        raise TypeError("records: a list of Record, not one Record (for one pair, use predict(text, image))")
    if isinstance(records, (str, bytes, dict)) or not hasattr(records, "__iter__"):
        raise TypeError(f"records: a list of Record, not {type(records).__name__}")
    if not isinstance(records, (list, tuple)):
        records = list(records)
    for number, record in enumerate(records):
        if not isinstance(record, Record):
            raise TypeError(f"records[{number}]: a Record(id, text, image), not {type(record).__name__}")
        if not isinstance(record.text, str):
            raise TypeError(f"records[{number}] (id {record.id!r}): text must be a string, not {type(record.text).__name__}")
        if image_paths and not isinstance(record.image, (str, Path)):
            raise TypeError(f"records[{number}] (id {record.id!r}): image must be the path of an image file, not "
                            f"{type(record.image).__name__} (predict(text, image) takes a PIL image or a numpy array)")
    return records


class _RewrittenTexts(Sequence):
    """``records`` with their texts rewritten as each is read, not all copied at once."""

    def __init__(self, records, rewrite):
        self.records, self.rewrite = records, rewrite

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        record = self.records[i]
        return dataclasses.replace(record, text=self.rewrite(record.text))


class Predictor:
    """A trained model with its tokenizer and image processor; no teacher is needed.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (default: the GPU if there is one, else the CPU). ``precision`` is
    that of training's ``--precision``: ``auto`` computes in bf16 autocast on GPUs with bf16 arithmetic, as training
    evaluated the model it kept, and in fp32 elsewhere. ``attention_backends`` is training's ``--attention-backends``:
    the attention kernels allowed, first supported first (default: PyTorch's choice).

    :meth:`run`, :meth:`iter_predictions` and :meth:`batches` draw a progress bar where stderr is a terminal or in a
    Jupyter notebook, as the ``clfa`` command does, and none where stderr is a file (a script's log would keep every
    redraw); their ``progress`` argument decides either way.

    Texts are padded to ``config.max_text_length`` as in training, and each batch is then cut to its longest text,
    where that computes the same: the tokenizer pads on the right and the text encoder does not read the padding
    (:func:`clfa.modeling.reads_trailing_padding`).
    """

    def __init__(self, model: CLFAModel, tokenizer, image_processor, device: str | torch.device | None = None,
                 precision: str = "auto", attention_backends: str | None = None):
        self.device = _device(device)
        self.precision = resolve_precision(precision, self.device)
        parse_attention_backends(attention_backends)  # a wrong name fails here, not at the first batch
        self.attention_backends = attention_backends
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.transform = ImageTransform(image_processor)
        self.labels = model.config.labels
        # Padding on the left is not cut: it would move the texts' tokens to other positions.
        self._cut_padding = tokenizer.padding_side == "right" and not reads_trailing_padding(model.config.text_config)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, **kwargs) -> "Predictor":
        """``path``: a folder written by ``clfa train`` (or ``save_pretrained``), one of its Trainer checkpoints
        (``OUTPUT_DIR/checkpoints/checkpoint-N``), or such a model's name on the hub.
        ``kwargs``: ``precision``, ``attention_backends``."""
        path, local = trained_model_location(path)
        folder = Path(path)
        processing = _processing_folder(folder) if local else path
        missing = _missing_files(folder, processing) if local else []
        # The config is read before the other files are asked for, so that another model's folder is named as such.
        config = _clfa_config(str(path), local) if "config.json" not in missing else None
        if missing and (last := unfinished_run(folder)):
            raise OptionError(f"{path}: a run that has not finished (no {', '.join(missing)}){unfinished_hint(last)}")
        if missing and training_now(folder):
            raise OptionError(f"{path}: a run that is still training, and has saved no checkpoint yet")
        if missing:
            raise OptionError(f"{path}: not a trained model folder (no {', '.join(missing)}){_HINT}")
        _settle_normalization(config, str(path), processing, local)
        try:
            # Mis-shaped weights are reported below with the others, not in a log record before a bare RuntimeError.
            model, info = CLFAModel.from_pretrained(path, config=config, output_loading_info=True, ignore_mismatched_sizes=True)
            tokenizer, processor = AutoTokenizer.from_pretrained(processing), load_image_processor(processing)
        except (OSError, ValueError, SafetensorError, TypeError, AttributeError) as err:
            # A file cut short or not what its name says. transformers names no JSON file it cannot read, and meets one
            # that holds no object as a TypeError or an AttributeError: re-raised where no file explains it.
            broken = _broken_json(Path(processing)) if local else None
            if broken is None and isinstance(err, (TypeError, AttributeError)):
                raise
            raise OptionError(f"{path}: cannot load the model ({broken or first_line(err)})") from None
        if not _holds_words(tokenizer):
            raise OptionError(f"{path}: not a trained model folder (no tokenizer.json or other vocabulary file: its "
                              f"tokenizer of {len(tokenizer)} tokens holds no words){_HINT}")
        # from_pretrained fills weights the file lacks with random values and only logs it: a config edited after
        # training would otherwise serve predictions from a partly random model.
        scores = f"classifier.{len(model.classifier) - 1}.bias"  # one per class
        for key in info.get("mismatched_keys") or ():
            if isinstance(key, tuple) and key[0] == scores:
                raise OptionError(f"{path}: its config.json names {len(config.labels)} label(s) ({', '.join(config.labels)}), "
                                  f"and its classifier gives {key[1][0]} scores")
        if problems := [f"{len(keys)} {kind} weight(s), e.g. {_weight_name(sorted(keys)[0])}" for kind, keys in
                        (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys")),
                         ("mis-shaped", info.get("mismatched_keys"))) if keys]:
            raise OptionError(f"{path}: its config.json does not match its weights ({'; '.join(problems)})")
        # A run that diverged still writes its model: its predictions would all be the first label, with NaN scores.
        if diverged := first_non_finite_weight(model):
            raise OptionError(f"{path}: its weights are not all numbers (e.g. {diverged}): the run that wrote it diverged")
        return cls(model, tokenizer, processor, device, **kwargs)

    def save_pretrained(self, path: str | Path) -> list[Path]:
        """Write what prediction needs, and nothing else, to ``path``: the config, the weights (safetensors), the
        tokenizer and the image processor, all JSON or safetensors. Returns the files the folder then holds."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        return sorted(file for file in path.iterdir() if file.is_file())

    def _on_device(self) -> contextlib.AbstractContextManager:
        """The predictor's GPU as this thread's current one, for the block. torch pins host memory, starts a loader's
        pin-memory thread and checks autocast's bf16 support on the current GPU, the first unless set: on cuda:1 these
        would open a context (some 500 MB) on a GPU not asked for."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _on_device_each(self, loader) -> Iterator[dict]:
        """``loader``'s batches, each made (and pinned) with the predictor's GPU current; the caller's code between
        batches runs with its own."""
        with self._on_device():
            batches = iter(loader)
        while True:
            with self._on_device():
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    @torch.inference_mode()
    def _forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """``batch`` holds uint8 ``pixels``, normalised after the copy to the device (a quarter of the bytes of floats)."""
        length = self._text_length(batch["attention_mask"])  # read on the host: no wait for the device
        with contextlib.ExitStack() as scope:
            scope.enter_context(self._on_device())
            inputs = {k: batch[k].to(self.device, non_blocking=True) for k in ("input_ids", "attention_mask", "pixels")}
            for key in ("input_ids", "attention_mask"):
                # Cut after the copy, which a view of a pinned batch would make from pageable memory.
                inputs[key] = inputs[key][:, :length].contiguous()
            inputs["pixel_values"] = self.transform.normalize(inputs.pop("pixels"))
            scope.enter_context(autocast(self.precision, self.device))
            scope.enter_context(attention_backends(self.attention_backends))
            out = self.model(**inputs)
        features = {f"{kind}_features": getattr(out, f"{kind}_features").float().cpu() for kind in self.model.config.modalities}
        return {"probabilities": out.logits.float().softmax(-1).cpu(), **features}

    def _text_length(self, mask: torch.Tensor) -> int:
        """The token columns the model is given: up to the last that holds a token of any of the batch's texts (a
        tweet of 20 tokens is not run on 77), or all of them where they are not cut."""
        if not self._cut_padding:
            return mask.shape[1]
        columns = mask.any(0).nonzero()
        return int(columns[-1]) + 1 if len(columns) else mask.shape[1]

    def _text(self, text: str) -> str:
        """The text as the model read its training texts (rewritten where training rewrote them)."""
        return normalize_tweet(text) if self.model.config.normalize_text else text  # None: not known, taken as given

    def predict(self, text: str | None, image: str | Path | Image.Image | np.ndarray | None = None) -> dict:
        """``{"label": name, "probabilities": {name: p, ...}}`` of one pair; ``image`` is a path, a PIL image or an
        (H, W[, C]) uint8 array. A single-modality baseline that reads one of them (``config.modalities``) may be given
        None for the other. An empty text, or an image file that cannot be read (given by its path, or as the image PIL
        opened from it), is a :class:`DataError` naming it."""
        reads = self.model.config.modalities
        for name, kind, value in (("text", "a string", text), ("image", "a path, a PIL image or a numpy array", image)):
            if value is None and name in reads:
                raise TypeError(f"{name} must be {kind}, not NoneType: this model reads the {' and the '.join(reads)} of a pair")
        if text is None:
            text = ""  # the tokens of no text: the model does not read them
        elif not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        elif blank(text) and "text" in reads:  # as a file's empty text is refused: a label for nothing is no prediction
            raise DataError("empty text")
        if image is None:  # as a text-only baseline's images are, in batches: none decoded
            pixels = BlankImages(1, self.transform.size)[0]
        elif isinstance(image, Image.Image) and getattr(image, "filename", ""):
            # An image opened from a file (clfa predict --image gives the one its check decoded): a failure to read it
            # names the file, as it does for the file's path.
            pixels = self.transform.load(image.filename, image=image)
        elif isinstance(image, (np.ndarray, Image.Image)):
            image = _array_image(image) if isinstance(image, np.ndarray) else image
            if 0 in image.size:  # as a numpy array of none is refused: resized, it would be pixels of nothing
                raise ValueError(f"an image of no pixels ({image.width} x {image.height})")
            pixels = self.transform.load_image(image)
        elif isinstance(image, (str, Path)):
            pixels = self.transform.load(image)
        else:
            raise TypeError(f"image must be a path, a PIL image or a numpy array, not {type(image).__name__}")
        enc = tokenize(self.tokenizer, [self._text(text)], self.model.config.max_text_length)
        batch = {**enc, "pixels": torch.from_numpy(pixels)[None]}
        probs = self._forward(batch)["probabilities"][0]
        return self._result(probs)

    def _result(self, probs: torch.Tensor) -> dict:
        return labelled(probs, self.labels)

    def batches(self, records: Iterable[Record], batch_size: int = 64, num_workers: int = 0, progress: bool | None = None,
                images=None) -> Iterator[dict[str, np.ndarray]]:
        """Probabilities (B, C) and pooled aligned text / image features (B, D), one batch of records after the
        other, in the records' order: what has been computed is usable, and freed, before the rest is. A
        single-modality baseline has the features of its one modality (``config.modalities``). The arguments as
        :meth:`run`."""
        yield from self._batches(self._checked(records, images), batch_size, num_workers, progress, images)

    def _checked(self, records, images) -> list[Record] | tuple[Record, ...]:
        return _checked_records(records, image_paths=images is None and "image" in self.model.config.modalities)

    def _batches(self, records, batch_size: int, num_workers: int, progress: bool | None,
                 images) -> Iterator[dict[str, np.ndarray]]:
        if self.model.config.normalize_text:  # the rewriting changes nothing in a text it has already rewritten
            # The function, not the bound self._text: loader workers started by spawn (macOS, Windows) are sent the
            # dataset pickled, and a bound method would take the whole Predictor, its model included, to each worker.
            records = _RewrittenTexts(records, normalize_tweet)
        if images is None and "image" not in self.model.config.modalities:  # a text-only baseline reads no image
            images = BlankImages(len(records), self.transform.size)
        # Texts are tokenised batch by batch, as images are decoded: memory stays flat and the first batch comes at once.
        dataset = CLFADataset(records, self.tokenizer, self.transform, self.model.config.max_text_length, images=images,
                              tokenize_per_batch=True)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=stack, pin_memory=self.device.type == "cuda"
        )
        for batch in tqdm(self._on_device_each(loader), desc="predict", unit="batch", total=len(loader),
                          disable=not progress_bars(progress)):
            yield {key: value.numpy() for key, value in self._forward(batch).items()}

    def run(self, records: Iterable[Record], batch_size: int = 64, num_workers: int = 0, progress: bool | None = None,
            images=None) -> dict[str, np.ndarray]:
        """Probabilities (N, C), in ``labels`` order, and pooled aligned text / image features (N, D) for many records
        (each a :class:`Record` whose ``image`` is a file's path; its ``label`` is not read).

        ``batch_size``: records per forward pass; ``num_workers``: processes that read and decode images while the
        model runs (0: in this one); ``progress``: show a progress bar (default: as the ``clfa`` command decides, where
        stderr is a terminal or in a Jupyter notebook, not where it is a file, which would keep every redraw);
        ``images``: the records' preprocessed uint8 images, if at hand (as from the image cache)."""
        parts: dict[str, list[np.ndarray]] = {}
        for outputs in self.batches(records, batch_size, num_workers, progress, images):
            for key, value in outputs.items():
                parts.setdefault(key, []).append(value)
        if not parts:
            config = self.model.config
            width = {"probabilities": len(self.labels)} | {f"{kind}_features": config.align_dim for kind in config.modalities}
            return {key: np.zeros((0, n), dtype=np.float32) for key, n in width.items()}
        return {key: np.concatenate(values) for key, values in parts.items()}

    def iter_predictions(self, records: Iterable[Record], batch_size: int = 64, num_workers: int = 0,
                         progress: bool | None = None, images=None) -> Iterator[dict]:
        """``{"id", "label", "probabilities"}`` for each record, in order, as its batch is done; the arguments as
        :meth:`run`. Only the probabilities are kept, so the memory used does not grow with the number of records."""
        records, done = self._checked(records, images), 0
        for outputs in self._batches(records, batch_size, num_workers, progress, images):
            for probs in outputs["probabilities"]:
                yield {"id": records[done].id, **self._result(torch.from_numpy(probs))}
                done += 1

    def predict_records(self, records: Iterable[Record], **kwargs) -> list[dict]:
        """:meth:`iter_predictions` as a list."""
        return list(self.iter_predictions(records, **kwargs))
