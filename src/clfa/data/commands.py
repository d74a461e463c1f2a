"""``clfa data stats`` and ``clfa data check``: count a dataset's samples, and find what would break training.

``stats`` reads only the text and label files (images are only tested for existence), so it works before
the images are downloaded. ``check`` fully decodes every image in a thread pool and exits non-zero when
anything is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from clfa.data.arguments import add_dataset_arguments, dataset_from_args
from clfa.data.image_files import open_image, what_it_holds
from clfa.data.public.common import ReaderNotes
from clfa.data.records import DataError, Record, blank
from clfa.data.registry import DatasetSplits

MIN_SIDE, MAX_SIDE = 8, 20000  # outside this an image is a thumbnail, a banner or a decompression bomb


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data stats`` and ``data check`` to an argparse subparsers object; ``args.func(args)`` runs them."""
    from clfa.options import parse_bool, positive_int

    data = subparsers.add_parser("data", help="inspect a dataset: sample counts per split and label, broken images")
    commands = data.add_subparsers(dest="data_command", metavar="{stats,check}", required=True)
    stats = commands.add_parser("stats", help="samples per split and label (reads only text and label files)")
    add_dataset_arguments(stats)
    stats.add_argument("--json", action="store_true", help='print only {"train": {"total": n, "labels": {...}}, ...} on stdout')
    stats.set_defaults(func=run_stats, _parser=stats)
    check = commands.add_parser("check", help="decode every image and check texts and labels; exit 1 on any problem")
    add_dataset_arguments(check)
    check.add_argument("--workers", type=positive_int, default=None, help="threads decoding images (default: CPU count, at most 32)")
    check.add_argument("--show", type=positive_int, default=10, help="how many offenders to list (default 10)")
    check.add_argument("--progress", type=parse_bool, metavar="{true,false}", help="show a progress bar (default: when stderr is a terminal)")
    check.set_defaults(func=run_check, _parser=check)
    return data


def _load(args: argparse.Namespace, notes: ReaderNotes) -> DatasetSplits:
    # Images are never opened while reading: stats only tests existence, check decodes them itself.
    return dataset_from_args(args, check_images=False, notes=notes)


def _load_error(console: Console, exc: Exception) -> int:
    """A dataset that cannot be read at all: one line, and exit status 2, as every ``clfa`` command reports it
    (status 1 is ``check``'s "read, and found problems")."""
    console.print(f"clfa: error: {exc}", highlight=False, markup=False)
    return 2


def split_counts(dataset: DatasetSplits) -> dict[str, dict]:
    """``{split: {"total": n, "labels": {label: n}}}`` with every known label, in the dataset's label order."""
    out = {}
    for split, records in dataset.splits.items():
        counts = Counter(r.label for r in records)
        labels = list(dataset.labels) + sorted(str(k) for k in counts if k is not None and k not in dataset.labels)
        out[split] = {"total": len(records), "labels": {label: counts.get(label, 0) for label in labels}}
        if counts.get(None):  # records without a label still add up to the total
            out[split]["unlabelled"] = counts[None]
    return out


def run_stats(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    notes = ReaderNotes()
    try:
        dataset = _load(args, notes)
    except (DataError, ValueError, OSError) as exc:
        return _load_error(err, exc)
    counts = split_counts(dataset)
    missing = {split: sum(not Path(r.image).is_file() for r in records) for split, records in dataset.splits.items()}
    if args.json:
        print(json.dumps(counts))
        _print_notes(err, dataset, notes, missing)
        return 0
    from clfa.report import print_table  # imports scikit-learn, which `clfa --help` and a data error should not wait for

    out = Console(soft_wrap=True)
    cleaning = f" (--mmsd-filter {notes.mmsd_filter})" if notes.mmsd_filter else ""
    table = Table(title=f"{args.dataset}: samples per split{cleaning}")
    table.add_column("split")
    table.add_column("samples", justify="right")
    labels = list(next(iter(counts.values()))["labels"]) if counts else list(dataset.labels)
    for label in labels:
        table.add_column(label, justify="right")
    # Records without a label count in the total; their column shows only when there are some.
    unlabelled = any("unlabelled" in row for row in counts.values())
    if unlabelled:
        table.add_column("unlabelled", justify="right")
    table.add_column("missing images", justify="right")
    table.add_column("removed by cleaning", justify="right")
    for split, row in counts.items():
        table.add_row(split, f"{row['total']:,}", *(f"{row['labels'].get(label, 0):,}" for label in labels),
                      *([f"{row.get('unlabelled', 0):,}"] if unlabelled else []), f"{missing[split]:,}", f"{notes.removed_total(split):,}")
    total = {label: sum(row["labels"].get(label, 0) for row in counts.values()) for label in labels}
    table.add_row("total", f"{sum(r['total'] for r in counts.values()):,}", *(f"{total[label]:,}" for label in labels),
                  *([f"{sum(r.get('unlabelled', 0) for r in counts.values()):,}"] if unlabelled else []),
                  f"{sum(missing.values()):,}", f"{sum(notes.removed_total(s) for s in notes.removed):,}", style="bold")
    print_table(table, out)
    _print_notes(out, dataset, notes, missing=None)
    return 0


def _print_notes(console: Console, dataset: DatasetSplits, notes: ReaderNotes, missing: dict[str, int] | None) -> None:
    """What the table cannot show: cleaning reasons, decoding fallbacks, the split's folder, skipped records."""
    if missing is not None:
        console.print("missing images: " + ", ".join(f"{s} {n:,}" for s, n in missing.items()), highlight=False)
        removed = [f"{s} {notes.removed_total(s):,}" for s in dataset.splits]
        if notes.removed_total("all"):
            removed.append(f"before splitting {notes.removed_total('all'):,}")
        console.print("removed by cleaning: " + ", ".join(removed), highlight=False)
    _print_cleaning(console, notes)
    if empty := dataset.empty_texts():
        console.print(empty, highlight=False)
    for line in dataset.shared_notes():
        console.print(line, highlight=False)
    if notes.fallback_decoded:
        console.print(f"{notes.fallback_decoded:,} text(s) were not valid UTF-8 and were decoded as GBK (the release's Chinese code page) where their bytes are GB2312 text or GBK's en dash and like symbols, else as Windows-1252/Latin-1", highlight=False)
    if notes.split_dir is not None:
        console.print(f"split {'written to' if notes.split_written else 'read from'} {notes.split_dir}", highlight=False)
    if len(dataset.skipped):
        console.print(dataset.skipped.summary(), highlight=False)


def _print_cleaning(console: Console, notes: ReaderNotes) -> None:
    """Samples the dataset's standard cleaning removed, by split and reason: not problems, but not silent either."""
    for split, reasons in notes.removed.items():
        if reasons:
            where = "before splitting" if split == "all" else f"from {split}"
            console.print(f"cleaning removed {sum(reasons.values()):,} {where}: " + ", ".join(f"{n:,} x {r}" for r, n in reasons.most_common()), highlight=False)


def inspect_image(path: Path) -> tuple[str, str] | None:
    """``(kind, detail)`` for an image that cannot be used, or None. Decodes it fully to catch truncation."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing image", f"{path} does not exist"
    except OSError as err:  # a loop of links, a folder that cannot be entered
        return "missing image", f"{path}: {err.strerror}"
    if size == 0:
        return "empty image file", f"{path} has 0 bytes"
    if path.is_dir():  # a path that names a folder
        return "folder instead of an image file", f"{path} is a folder"
    try:
        with open_image(path) as img:
            width, height = img.size
            if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
                return "absurd dimensions", f"{path} is {width}x{height} (allowed {MIN_SIDE}-{MAX_SIDE} px per side)"
            img.load()
    except Image.DecompressionBombError as exc:
        return "absurd dimensions", f"{path}: {exc}"
    except UnidentifiedImageError:
        held = what_it_holds(path)
        return "not an image", f"{path} holds {held}" if held else f"{path} is not an image file PIL can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return "truncated or corrupt image", f"{path}: {exc}"
    return None


def run_check(args: argparse.Namespace) -> int:
    from clfa.options import progress_bars

    err, out = Console(stderr=True, soft_wrap=True), Console(soft_wrap=True)
    notes = ReaderNotes()
    try:
        dataset = _load_collecting(args, notes)
    except (DataError, ValueError, OSError) as exc:
        return _load_error(err, exc)
    problems: dict[str, list[str]] = {}

    def add(kind: str, detail: str) -> None:
        problems.setdefault(kind, []).append(detail)

    for error in dataset.skipped.skipped:  # malformed lines, duplicate ids, unknown labels...
        add("invalid record", str(error))
    records = [r for split in dataset.splits.values() for r in split]
    for record in records:
        if blank(record.text):
            add("empty text", f"{record.source}: record '{record.id}' has an empty text")
        if record.label is None:
            add("missing label", f"{record.source}: record '{record.id}' has no label")
        elif record.label not in dataset.labels:
            add("unknown label", f"{record.source}: label '{record.label}' is not one of {', '.join(dataset.labels)}")
    for (split, earlier), pairs in dataset.shared_samples().items():
        for record, other in pairs:
            add("sample in two splits", f"{record.source or record.id}: the text and image of {other.source or other.id} "
                                        f"({earlier} split), in the {split} split too")
    users: dict[Path, list[str]] = {}  # each file checked once, even when shared; its records named
    for record in records:
        users.setdefault(Path(record.image), []).append(record.source or record.id)
    images = list(users)
    workers = args.workers or min(32, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(inspect_image, images), total=len(images), desc="checking images", unit="img",
                            disable=not progress_bars(args.progress)))
    for image, result in zip(images, results):
        if result:
            kind, detail = result
            first, *more = users[image]
            add(kind, f"{first}: {detail}" + (f" (also the image of {len(more):,} more record(s))" if more else ""))
    return _report_check(out, dataset, notes, records, len(images), problems, args.show)


def _load_collecting(args: argparse.Namespace, notes: ReaderNotes) -> DatasetSplits:
    # Every bad record is collected (as with --skip-invalid) so one run lists all of them, not the first.
    args = argparse.Namespace(**{**vars(args), "skip_invalid": True})
    return _load(args, notes)


def _report_check(out: Console, dataset: DatasetSplits, notes: ReaderNotes, records: list[Record], n_images: int,
                  problems: dict[str, list[str]], show: int) -> int:
    sizes = ", ".join(f"{split} {len(rs):,}" for split, rs in dataset.splits.items())
    # The invalid records were read too (and are listed below): counted, the total is the files' own, less what the
    # cleaning removed (said next).
    if invalid := len(problems.get("invalid record", ())):
        sizes += f", and {invalid:,} invalid"
    out.print(f"checked {len(records) + invalid:,} records ({sizes}) and {n_images:,} image files", highlight=False)
    _print_cleaning(out, notes)  # the lines the count above leaves out
    if not problems:
        out.print("[green]no problems found[/green]")
        return 0
    table = Table(title="problems")
    table.add_column("problem")
    table.add_column("count", justify="right")
    for kind, details in sorted(problems.items(), key=lambda kv: -len(kv[1])):
        table.add_row(kind, f"{len(details):,}")
    out.print(table)
    for kind, details in problems.items():
        out.print(f"{kind}: first {min(show, len(details))} of {len(details):,}", highlight=False)
        for detail in details[:show]:
            out.print(f"  {detail}", highlight=False)
    return 1
