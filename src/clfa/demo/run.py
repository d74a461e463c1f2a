"""``clfa demo``: the whole method, offline, in minutes on a laptop CPU.

It generates the sarcasm world of :mod:`clfa.demo.world`, trains a small CLIP teacher on its literal
captions, then trains small random-initialised BERT and ViT students four ways (CLFA; BERT+ViT without
alignment; text only; image only) through the same ``clfa.training.train`` a real run uses, and prints
one comparison table. It writes the CLFA model (ready for ``clfa evaluate`` / ``clfa predict``), all
metrics, and the alignment heat map of the paper's Figure 4. Its progress goes to stderr: as bars, or, where bars
are off (a log file), as one line per teacher epoch, per evaluation and per model trained.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from tqdm.auto import tqdm
from transformers import BertConfig, BertModel, TrainerCallback, ViTConfig, ViTImageProcessorPil, ViTModel

from clfa.data.registry import DatasetSplits, load_dataset
from clfa.demo.folder import MARK, check_out_folder
from clfa.demo.teacher import torch_threads, train_teacher
from clfa.demo.tokenizer import build_tokenizer
from clfa.demo.workers import Workers, worker_count
from clfa.demo.world import SCENES, generate_world, scene_of
from clfa.options import TrainOptions
from clfa.predict import Predictor
from clfa.report import metrics_table, print_table
from clfa.training import train
from clfa.visualize import alignment_heatmaps, cosine_matrix


@dataclass(frozen=True)
class DemoSize:
    n_train: int
    n_dev: int
    n_test: int
    image_size: int
    teacher_epochs: int
    epochs: int
    hidden: int
    layers: int


FULL = DemoSize(n_train=3000, n_dev=500, n_test=500, image_size=32, teacher_epochs=5, epochs=10, hidden=64, layers=2)
QUICK = DemoSize(n_train=800, n_dev=200, n_test=200, image_size=32, teacher_epochs=5, epochs=8, hidden=64, layers=2)

# name -> options that make the variant; the paper's Table 4 / Table 7 naming.
VARIANTS: dict[str, dict] = {
    "CLFA": {},
    "BERT+ViT": {"alignment": "none"},
    "BERT (text only)": {"alignment": "none", "fusion": "text_only"},
    "ViT (image only)": {"alignment": "none", "fusion": "image_only"},
}
RUN_DIRS = {"CLFA": "model", "BERT+ViT": "runs/bert-vit", "BERT (text only)": "runs/text-only", "ViT (image only)": "runs/image-only"}


def say(line: str) -> None:
    """A line of progress on stderr, beside where the bars would be, written at once: stdout holds the results."""
    print(line, file=sys.stderr, flush=True)


class RunProgress(TrainerCallback):
    """A trained model's progress, as events for :class:`Progress`, made in whichever process trains the model."""

    def __init__(self, name: str, report: Callable[[tuple], None]):
        self.name, self.report = name, report
        self.began = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()
        self.report(("begin", self.name, state.max_steps))

    def on_step_end(self, args, state, control, **kwargs):
        self.report(("step", self.name, state.global_step))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        accuracy = metrics.get("eval_accuracy", float("nan"))
        self.report(("evaluated", self.name, accuracy,
                     f"{self.name}: epoch {state.epoch:.0f}/{args.num_train_epochs:.0f}, step {state.global_step}/{state.max_steps}: "
                     f"dev accuracy {accuracy:.3f} ({time.perf_counter() - self.began:.0f} s)"))

    def on_train_end(self, args, state, control, **kwargs):
        self.report(("end", self.name))


class Progress:
    """The models' progress, shown by the demo's process whichever process trains them: a bar each with its latest dev
    accuracy, or, without bars, a line per evaluation and per model trained. Events come from this process's thread
    and from the one that reads the workers' (:mod:`clfa.demo.workers`)."""

    def __init__(self, bars: bool):
        self.bars = bars
        self.open: dict[str, tqdm] = {}
        self.lock = threading.Lock()

    def __call__(self, event: tuple) -> None:
        kind, name, *values = event
        with self.lock:
            bar = self.open.get(name)
            if kind == "begin" and self.bars:
                self.open[name] = tqdm(total=values[0], desc=f"{name:<17}", unit="step", leave=True)
            elif kind == "step" and bar is not None:
                bar.update(values[0] - bar.n)
            elif kind == "evaluated" and bar is not None:
                bar.set_postfix(dev_acc=f"{values[0]:.3f}")
            elif kind in ("evaluated", "trained") and not self.bars:
                say(values[-1])
            elif kind == "end" and bar is not None:
                self.open.pop(name).close()


@dataclass(frozen=True)
class Job:
    """One of the demo's models to train: what :func:`train_variant` needs, in this process or in a worker."""

    name: str
    options: TrainOptions
    data: DatasetSplits


def train_variant(job: Job, report: Callable[[tuple], None]) -> dict:
    """Train ``job``'s model anew (an earlier demo's run of it is removed), reporting its progress to ``report``; its
    metrics, with the seconds it took."""
    shutil.rmtree(job.options.output_dir, ignore_errors=True)
    tic = time.perf_counter()
    result = train(job.options, job.data, callbacks=[RunProgress(job.name, report)], quiet=True)
    result["seconds"] = round(time.perf_counter() - tic, 1)
    report(("trained", job.name, f"{job.name}: {result['train']['steps']} steps in {result['seconds']:.1f} s; dev accuracy "
                                 f"{result['dev']['accuracy']:.3f}, test accuracy {result['test']['accuracy']:.3f}"))
    return result


def _students(root: Path, tokenizer, size: DemoSize, seed: int) -> tuple[Path, Path]:
    """Random-initialised small BERT and ViT saved like hub checkpoints, with tokenizer / image processor."""
    torch.manual_seed(seed)
    shape = dict(hidden_size=size.hidden, num_hidden_layers=size.layers, num_attention_heads=4, intermediate_size=4 * size.hidden)
    text_dir, image_dir = root / "bert-student", root / "vit-student"
    BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **shape), add_pooling_layer=False).save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)
    ViTModel(ViTConfig(image_size=size.image_size, patch_size=8, **shape), add_pooling_layer=False).save_pretrained(image_dir)
    ViTImageProcessorPil(size={"height": size.image_size, "width": size.image_size}).save_pretrained(image_dir)
    return text_dir, image_dir


def _heatmap(out: Path, model_dirs: dict[str, Path], data: DatasetSplits, per_scene: int = 4) -> Path:
    """Figure 4: captions (rows) against their images (columns) for a test batch grouped by scene, with the
    aligned and the unaligned model's features; aligned features show the scene blocks on the diagonal."""
    by_scene = {scene: [r for r in data["test"] if scene_of(r.caption) == scene][:per_scene] for scene in SCENES}
    records = [dataclasses.replace(r, text=r.caption) for group in by_scene.values() for r in group]
    ticks = [scene for scene, group in by_scene.items() for _ in group]
    panels = {}
    for name, path in model_dirs.items():
        features = Predictor.from_pretrained(path, device="cpu").run(records, batch_size=len(records), progress=False)
        panels[name] = cosine_matrix(features["text_features"], features["image_features"])
    return alignment_heatmaps(panels, out / "alignment_heatmap.png", tick_labels=ticks)


def run_demo(out: Path, quick: bool = False, seed: int = 0, progress: bool = True, workers: int | None = 0) -> dict:
    """``progress``: draw bars (as a notebook does, whose stderr is no terminal); else show the progress as lines.
    ``workers``: processes that train the baselines beside this one, with the same results (:mod:`clfa.demo.workers`);
    None: one per core beside this process's (``clfa demo``'s choice). They start as multiprocessing's spawned
    processes do, importing the caller's main module: a script that asks for them needs the
    ``if __name__ == "__main__":`` guard."""
    size = QUICK if quick else FULL
    out = Path(out)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARK).write_text("made by clfa demo, which may replace what it wrote here\n")
    # Kernels of models this small are too short to share between threads: one thread is faster, and much
    # faster on a machine whose other cores are busy.
    with torch_threads(1):
        baselines = len(VARIANTS) - 1
        with Workers(worker_count(baselines) if workers is None else min(workers, baselines), Progress(progress)) as pool:
            return _run(out, size, seed, progress, pool)


def _run(out: Path, size: DemoSize, seed: int, progress: bool, workers: Workers) -> dict:
    console = Console()
    start = time.perf_counter()

    console.rule("1/3  world and teacher")
    generate_world(out / "data", size.n_train, size.n_dev, size.n_test, seed=seed, image_size=size.image_size)
    data = load_dataset("jsonl", out / "data")
    console.print(f"generated {', '.join(f'{len(v)} {k}' for k, v in data.splits.items())} image+text pairs in {out / 'data'}")
    tokenizer = build_tokenizer(out / "models" / "tokenizer")
    teacher = train_teacher(data["train"], out / "models" / "teacher", tokenizer, image_size=size.image_size,
                            epochs=size.teacher_epochs, seed=seed, progress=progress, report=None if progress else say)
    text_student, image_student = _students(out / "models", tokenizer, size, seed)

    console.rule("2/3  students")
    base = TrainOptions(
        text_model=str(text_student),
        image_model=str(image_student),
        teacher=str(teacher),
        mapping_hidden_dim=2 * size.hidden,
        fusion_layers=2,
        fusion_heads=4,
        fusion_ffn_dim=2 * size.hidden,
        align_dim=32,
        max_text_length=24,  # the world's tweets are at most 19 tokens
        # Small layers trained from scratch: with the default 0.02 the head's first logits are ~1e-4 and the
        # unaligned model can sit at chance for many epochs.
        initializer_range=0.1,
        learning_rate=1e-3,
        batch_size=16,
        eval_batch_size=256,
        epochs=size.epochs,
        seed=seed,
        num_workers=0,
        cache_dir=str(out / "cache"),
        report_to="none",
        logging_steps=10**6,
        save_total_limit=1,
        metric="accuracy",
        progress=False,
    )
    model_dirs = {name: out / RUN_DIRS[name] for name in VARIANTS}
    jobs = [Job(name, dataclasses.replace(base, output_dir=str(model_dirs[name]), **changes), data) for name, changes in VARIANTS.items()]
    # Workers train the baselines while this process trains CLFA, then what no worker has taken.
    workers.submit(jobs[1:])
    trained = {jobs[0].name: train_variant(jobs[0], workers.report)}
    for job in workers.leftovers():
        trained[job.name] = train_variant(job, workers.report)
    trained |= workers.finish()
    results = {name: trained[name] for name in VARIANTS}

    console.rule("3/3  results")
    table = metrics_table(
        {name: m["test"] for name, m in results.items()},
        title="demo test set (%)",
        first_column="model",
        keys=("accuracy", "precision", "recall", "f1", "macro_f1"),
    )
    print_table(table, console)
    heatmap = _heatmap(out, {name: model_dirs[name] for name in list(VARIANTS)[:2]}, data)
    summary = {
        "size": dataclasses.asdict(size),
        "seconds": round(time.perf_counter() - start, 1),
        "models": {name: {"dir": str(model_dirs[name]), "seconds": m["seconds"], "dev": m["dev"], "test": m["test"]} for name, m in results.items()},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    # One line each however narrow the terminal: a path or command broken over two lines does not paste.
    console.print(f"CLFA model: {out / 'model'}   metrics: {out / 'metrics.json'}   heat map: {heatmap}", soft_wrap=True)
    console.print(f"try:  clfa predict --model {out / 'model'} --input {out / 'data' / 'test.jsonl'} --output predictions.jsonl",
                  soft_wrap=True)
    console.print(f"done in {summary['seconds']:.0f} s")
    return summary
