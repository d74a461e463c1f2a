"""``clfa export`` (:func:`export_model`): what prediction needs of a model, with the run's metrics.json and a model
card (README.md), written to a new folder in a form that can leave the machine. A run records where its data, models
and checkpoints were (absolute paths, so that its folder read later still says what it read); a shipped model keeps
those as names from the data and run folders down, which say what was read without the directory layout above them."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub.utils import validate_repo_id

from clfa import __version__
from clfa.data.records import reason_kind
from clfa.data.registry import PATH_OPTIONS
from clfa.errors import OptionError, first_line
from clfa.files import make_folder, on_disk, remove_abandoned, writing
from clfa.hub import trained_model_location

# Neither torch, transformers nor scikit-learn at import: clfa export refuses a folder or a model name before the
# seconds of loading them.
if TYPE_CHECKING:
    from clfa.configuration import CLFAConfig

# Options of a run that name a folder or model on the trainer's machine (hub names are left as they are).
_PATH_SETTINGS = ("output_dir", "text_model", "image_model", "teacher", "cache_dir")
# Of those, the ones that are always a folder: a relative one (recorded as given) is not taken for a hub name.
_FOLDER_SETTINGS = ("output_dir", "cache_dir")
_CONFIG_NAMES = ("text_model_name", "image_model_name", "teacher_model_name")


def shareable_name(name: str | None, anchors: tuple[Path, ...] = (), folder: bool = False) -> str | None:
    """``name`` without the folders above it: an absolute path within one of ``anchors`` (the data folder, the run
    folder) from that folder's own name down; another path (``/``, ``~``, ``..``) by its own name; a name that may
    be the hub's (``org/model``) as it is, unless ``folder`` says it names a folder."""
    if not isinstance(name, str) or not name:
        return name
    path = Path(name)
    if not path.is_absolute():
        if not folder:
            try:
                validate_repo_id(name)
                return name
            except ValueError:
                pass
        return path.name or name
    for anchor in anchors:
        if path.is_relative_to(anchor):
            return (Path(anchor.name) / path.relative_to(anchor)).as_posix()
    return path.name


def shareable_metrics(metrics: dict) -> dict:
    """A run's metrics.json with every path it records made a :func:`shareable_name`; what was skipped keeps its file,
    line and kind of problem, whose message may quote a path."""
    options = metrics.get("options") or {}
    anchors = tuple(Path(folder) for folder in (metrics.get("data_dir"), options.get("output_dir"), _run_folder(metrics)) if folder)

    def name(value, folder: bool = False):
        return shareable_name(value, anchors, folder)

    out = dict(metrics)
    for key in ("data_dir", "best_checkpoint"):
        if key in out:
            out[key] = name(out[key])
    if isinstance(out.get("files"), dict):
        out["files"] = {split: name(file) for split, file in out["files"].items()}
    if isinstance(out.get("data_options"), dict):
        out["data_options"] = {key: name(value) if key in PATH_OPTIONS else value for key, value in out["data_options"].items()}
    if isinstance(out.get("options"), dict):
        out["options"] = {key: name(value, key in _FOLDER_SETTINGS) if key in _PATH_SETTINGS else value for key, value in options.items()}
    if isinstance(out.get("skipped"), list):
        out["skipped"] = [entry | {"file": name(entry.get("file")), "reason": reason_kind(str(entry.get("reason", "")))}
                          if isinstance(entry, dict) else entry for entry in out["skipped"]]
    return out


def _run_folder(metrics: dict) -> Path | None:
    """The run's folder as its best checkpoint (``OUTPUT_DIR/checkpoints/checkpoint-N``, recorded absolute) places it:
    its ``output_dir`` is recorded as given, relative to a working folder that the metrics do not name."""
    best = metrics.get("best_checkpoint")
    return Path(best).parents[1] if isinstance(best, str) and Path(best).is_absolute() else None


def make_config_shareable(config: CLFAConfig) -> None:
    """The students' and teacher's names in ``config`` as :func:`shareable_name` gives them: nothing reads them to
    predict, and a local folder's path would tell the trainer's directory layout."""
    for key in _CONFIG_NAMES:
        setattr(config, key, shareable_name(getattr(config, key)))
    for sub in (config.text_config, config.image_config):
        sub.name_or_path = shareable_name(sub.name_or_path)


def _percent(value) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def _metrics_section(metrics: dict | None, positive: str | None) -> list[str]:
    from clfa.metrics import HEADLINE
    from clfa.report import TITLES

    splits = {split: metrics[split] for split in ("dev", "test") if isinstance(metrics, dict) and isinstance(metrics.get(split), dict)}
    if not splits:
        return ["No scores came with this model (a Trainer checkpoint, or a model saved without its run's metrics.json)."]
    keys = [key for key in HEADLINE if any(key in scores for scores in splits.values())]
    options = metrics.get("options") or {}
    picked = (f"the checkpoint with the best dev {options['metric']}" if "dev" in splits and options.get("metric")
              else "the model of the last step")
    files = metrics.get("files") or {}
    lines = [f"Trained on `{metrics.get('dataset', '?')}`"
             + (f" ({', '.join(f'{split}: `{file}`' for split, file in files.items())})" if files else "")
             + f"; this is {picked}. Scores in %:", "",
             "| split | samples | " + " | ".join(TITLES[key] for key in keys) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |"]
    lines += [f"| {split} | {scores.get('num_samples', '-')} | " + " | ".join(_percent(scores.get(key)) for key in keys) + " |"
              for split, scores in splits.items()]
    lines.append("")
    if positive is not None:
        lines.append(f"P, R and F1 are those of the positive class, `{positive}`.")
    elif "f1" in keys:
        lines.append("F1 is the weighted F1, as MVSA work reports it.")
    lines.append("metrics.json holds the per-class report, the confusion matrices and the training options; its paths "
                 "start at the data and run folders, without the folders above them.")
    return lines


def model_card(config: CLFAConfig, metrics: dict | None, name: str, parameters: int) -> str:
    """README.md of an exported model: what it is, its labels, its scores and how to use it."""
    positive = config.positive_label
    teacher = f"aligned with the teacher `{config.teacher_model_name}`" if config.teacher_model_name else "aligned with its teacher"
    alignment = (f"CLFA: both students {teacher} (contrastive, λ = {config.alignment_weight:g}, τ = {config.temperature:g}); "
                 "the teacher is needed for training only, and is not part of this model"
                 if config.uses_alignment else "none (the students are not aligned with a teacher)")
    fusion = config.fusion + (f", {config.fusion_layers} layer{'s' * (config.fusion_layers != 1)}, {config.fusion_heads} heads"
                              if config.fusion in ("cross_attention", "co_attention") else "")
    reads = " and ".join(config.modalities)
    rows = [("text student", f"`{config.text_model_name}` ({config.text_config.model_type})"),
            ("image student", f"`{config.image_model_name}` ({config.image_config.model_type})"),
            ("alignment", alignment),
            ("fusion", fusion),
            ("text", f"at most {config.max_text_length} tokens"
                     + ("; MMSD's placeholders rewritten as words (`--normalize-text`), as in training" if config.normalize_text else "")),
            ("parameters", f"{parameters:,}")]
    labels = [f"| {i} | `{label}`{' (positive class)' if label == positive else ''} |" for i, label in enumerate(config.labels)]
    text, image = ('"what a lovely day"', "photo.jpg")
    flags = " ".join(flag for flag, kind in ((f"--text {text}", "text"), (f"--image {image}", "image")) if kind in config.modalities)
    arguments = ", ".join(value if kind in config.modalities else "None" for value, kind in ((text, "text"), (f'"{image}"', "image")))
    lines = [
        "---", "tags:", "- clfa", "- image-text-classification", "- multimodal", "---", "",
        f"# {name}", "",
        f"An image+text classifier made with clfa {(metrics or {}).get('clfa_version', __version__)}: CLFA, contrastive cross-modal "
        f"feature alignment (Zhang, Chang, Wu, *Multi-modal Semantic Understanding with Contrastive Cross-modal Feature "
        f"Alignment*). It reads the {reads} of a pair and gives one of {len(config.labels)} labels, with the "
        "probability of each.", "",
        "## Model", "", "| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows), "",
        "## Labels", "", "| id | label |", "| ---: | --- |", *labels, "",
        "## Scores", "", *_metrics_section(metrics, positive), "",
        "## Use", "",
        "With clfa installed:", "",
        "```bash",
        f"clfa predict --model {shlex.quote(name)} {flags}",
        f"clfa predict --model {shlex.quote(name)} --input pairs.jsonl --output predictions.jsonl   # JSON Lines: id, text, image",
        "```", "",
        "```python", "from clfa.predict import Predictor", "",
        f"predictor = Predictor.from_pretrained({json.dumps(name)})",
        f"predictor.predict({arguments})  # {{'label': ..., 'probabilities': {{...}}}}",
        "```", "",
        "The folder holds all that prediction needs: the config, the weights (safetensors), the tokenizer and the "
        "image processor. The teacher is not needed, and nothing is fetched from the network.", "",
    ]
    return "\n".join(lines)


def read_metrics(source: Path) -> dict | None:
    """The metrics.json of the run in ``source`` made shareable, or None where it has none (a checkpoint)."""
    file = source / "metrics.json"
    if not file.is_file():
        return None
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OptionError(f"{file}: cannot be read ({first_line(err)})") from None
    if not isinstance(metrics, dict):
        raise OptionError(f"{file}: not the metrics of a run (a JSON {type(metrics).__name__}, not an object)")
    return shareable_metrics(metrics)


def write_extras(folder: Path, metrics: dict | None, config: CLFAConfig, name: str, parameters: int) -> None:
    """``metrics`` (see :func:`read_metrics`) as metrics.json, and the model card as README.md, into ``folder``."""
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (folder / "README.md").write_text(model_card(config, metrics, name, parameters), encoding="utf-8")


def check_export(model: str | Path, out: Path) -> None:
    """The refusals that need neither torch nor transformers, made before the seconds of importing them: ``out`` a new
    or empty folder and not the model's own, ``model`` a folder or a model the hub may give."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(f"--output-dir {out}: {'a file' if not out.is_dir() else 'not empty'}; give a new folder")
    if Path(model).exists() and out.resolve() == Path(model).resolve():
        raise OptionError(f"--output-dir {out} is the --model folder")
    trained_model_location(model)


def export_model(model: str | Path, out: str | Path) -> list[Path]:
    """What prediction needs of ``model`` (a trained model folder, one of its checkpoints, or a hub name): config,
    safetensors weights, tokenizer and image processor, with the run's metrics.json and a model card, written to ``out``
    (a new or empty folder). Returns the files written; an OptionError for a model or folder refused. On any failure or
    interrupt, nothing that passes for a model is left in ``out``."""
    out = Path(out)
    check_export(model, out)
    from clfa.predict import Predictor, unfinished_hint, unfinished_run

    source = Path(model).expanduser()
    # A run stopped between writing its model and its metrics.json (or during an extending --resume, which removes
    # them first) holds a model whose scores are nowhere: shipped, it would pass for one that has none.
    if source.is_dir() and (last := unfinished_run(source)):
        raise OptionError(f"{model}: a run that has not finished (no metrics.json beside its model){unfinished_hint(last)}")
    # On the CPU in fp32: the weights are written as they are stored, whatever the machine. Loaded before the folder
    # is made, so that a model that does not load leaves nothing behind.
    predictor = Predictor.from_pretrained(model, device="cpu", precision="fp32")
    metrics = read_metrics(source) if source.is_dir() else None
    # Where the students and teacher came from, without the trainer's folders (hub names stay as they are).
    make_config_shareable(predictor.model.config)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # the new folders, outermost last
    make_folder(out, f"--output-dir {out}")
    # Written beside it and given its name once whole and loaded: an export killed half-way (SIGKILL, power loss) leaves
    # the folder empty, not a model without its metrics or never loaded, and the same command can then be run again.
    final = out.resolve()  # a link to an empty folder: that folder takes the files; "." has a name once resolved
    # A folder that cannot be removed and replaced (the working folder, a mount point such as a container's volume, one
    # in a folder this user cannot write) is written in place, as before.
    in_place = (final == Path.cwd().resolve() or os.path.ismount(final)
                or not os.access(final.parent, os.W_OK | os.X_OK))
    staging = final if in_place else final.with_name(f".{final.name}.partial-{os.getpid()}")
    if not in_place:
        remove_abandoned(final.parent, f".{final.name}.partial-*")  # a killed export's
    # A full disk is the output's problem, named once what was written is removed.
    with writing(out, "--output-dir"):
        try:
            predictor.save_pretrained(staging)
            # What the model scored, on which data, and how to use it.
            write_extras(staging, metrics, predictor.model.config, final.name, sum(p.numel() for p in predictor.model.parameters()))
            Predictor.from_pretrained(staging, device="cpu")  # what was written loads as a model, before it is shipped
            for file in staging.iterdir():  # on disk before the folder takes the name that says the export is done
                on_disk(file)
            if not in_place:
                final.rmdir()  # empty: checked above
                staging.rename(final)
        except BaseException:
            if not in_place:
                shutil.rmtree(staging, ignore_errors=True)
                final.mkdir(exist_ok=True)  # had the rename failed
            _undo_export(out, made[-1] if made else None)
            raise
    return sorted(file for file in out.iterdir() if file.is_file())


def _undo_export(out: Path, made: Path | None) -> None:
    """A part of a model must not pass for one: remove the folders the export made, or, in a folder that was there
    (and empty), what the export wrote. A failure here is reported, not raised over the export's own error."""
    try:
        if made is not None:
            shutil.rmtree(made)
            return
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as err:
        print(f"clfa: the failed export's files could not all be removed from {out} ({err})", file=sys.stderr)
