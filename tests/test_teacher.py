"""Teacher embeddings: computed once, cached, and never reused for other records, texts, images or teachers."""

import dataclasses
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

import clfa.files
from clfa import teacher
from clfa.data.processing import load_image_processor
from clfa.data.registry import load_dataset
from clfa.teacher import compute_teacher_embeddings, teacher_embeddings, teacher_projection_dim


def cache_files(path):
    return sorted(path.glob("teacher-*.safetensors"))


def test_embeddings_are_the_teachers_projections(tiny_models, tiny_dataset):
    records = load_dataset("jsonl", tiny_dataset)["train"][:5]
    text, image = compute_teacher_embeddings(records, tiny_models["teacher"], batch_size=2, progress=False, device="cpu")
    assert text.shape == image.shape == (5, teacher_projection_dim(tiny_models["teacher"])) == (5, 24)
    clip = AutoModel.from_pretrained(tiny_models["teacher"]).eval()
    enc = AutoTokenizer.from_pretrained(tiny_models["teacher"])([records[0].text], return_tensors="pt")
    with torch.no_grad():
        direct = clip.get_text_features(**enc).pooler_output
    torch.testing.assert_close(text[0], direct[0], rtol=1e-4, atol=1e-5)


def test_cache_is_reused_and_keyed_on_everything(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    records = load_dataset("jsonl", tiny_dataset)["train"][:6]
    first = teacher_embeddings(records, tiny_models["teacher"], cache, progress=False)
    (path,) = cache_files(cache)
    stamp = path.stat().st_mtime_ns
    again = teacher_embeddings(records, tiny_models["teacher"], cache, progress=False)
    assert path.stat().st_mtime_ns == stamp and torch.equal(first[0], again[0])

    # Another text, another split, another image file, another length, another teacher: a new entry each.
    edited = [dataclasses.replace(records[0], text=records[0].text + " indeed")] + records[1:]
    teacher_embeddings(edited, tiny_models["teacher"], cache, progress=False)
    teacher_embeddings(records[:4], tiny_models["teacher"], cache, progress=False)
    teacher_embeddings(records, tiny_models["teacher"], cache, max_length=8, progress=False)
    image = records[1].image
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    teacher_embeddings(records, tiny_models["teacher"], cache, progress=False)
    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_models["teacher"], other)
    model = AutoModel.from_pretrained(other)
    torch.nn.init.normal_(model.text_projection.weight)
    model.save_pretrained(other)
    changed = teacher_embeddings(records, str(other), cache, progress=False)
    assert len(cache_files(cache)) == 6
    assert not torch.allclose(changed[0], first[0])
    # The same folder with new weights (a fine-tuned teacher saved over the old one) is another teacher too.
    torch.nn.init.normal_(model.text_projection.weight)
    model.save_pretrained(other)
    retrained = teacher_embeddings(records, str(other), cache, progress=False)
    assert len(cache_files(cache)) == 7
    assert not torch.allclose(retrained[0], changed[0])
    # Another backend of the same image processor settings (PIL or torchvision), whose settings read the same, may
    # resize differently.
    processor = load_image_processor(tiny_models["teacher"])
    backend = type("TorchvisionLike", (type(processor),), {"to_dict": lambda self: processor.to_dict()})
    monkeypatch.setattr(teacher, "load_image_processor", lambda path: backend(**processor.to_dict()))
    teacher_embeddings(records, tiny_models["teacher"], cache, progress=False)
    assert len(cache_files(cache)) == 8



def test_the_key_names_the_device_and_its_float32_math(tiny_models, tiny_dataset):
    """Embeddings a GPU computed (with TF32 convolutions, by PyTorch's default) were read back by a CPU run of the same
    settings, and the reverse."""
    records = load_dataset("jsonl", tiny_dataset)["train"][:4]
    keys = {device: teacher.cache_key(records, tiny_models["teacher"], 77, device) for device in ("cpu", "cuda", "cuda:1")}
    assert keys["cpu"] != keys["cuda"] == keys["cuda:1"]
    assert teacher.cache_key(records, tiny_models["teacher"], 77) == keys["cuda" if torch.cuda.is_available() else "cpu"]
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 matrix products on a GPU
    try:
        assert teacher.cache_key(records, tiny_models["teacher"], 77, "cuda") != keys["cuda"]
    finally:
        torch.set_float32_matmul_precision(precision)
    assert teacher.cache_key(records, tiny_models["teacher"], 77, "cuda") == keys["cuda"]


def test_a_cpu_run_reuses_its_own_cache_and_not_a_gpu_runs(tiny_models, tiny_dataset, tmp_path):
    records = load_dataset("jsonl", tiny_dataset)["train"][:6]
    text, image = compute_teacher_embeddings(records, tiny_models["teacher"], progress=False, device="cpu")
    gpu_key = teacher.cache_key(records, tiny_models["teacher"], 77, "cuda")
    save_file({"text": text + 1, "image": image + 1}, str(tmp_path / f"teacher-{gpu_key}.safetensors"))
    first = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False, device="cpu")
    assert torch.equal(first[0], text) and torch.equal(first[1], image)
    (own,) = set(cache_files(tmp_path)) - {tmp_path / f"teacher-{gpu_key}.safetensors"}
    stamp = own.stat().st_mtime_ns
    again = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False, device="cpu")
    assert own.stat().st_mtime_ns == stamp and torch.equal(again[0], text) and len(cache_files(tmp_path)) == 2

def test_two_writers_filling_one_cache_at_once_both_finish_with_a_whole_cache(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    """The main processes of two nodes sharing --cache-dir (torchrun's main_process_first lets one per node fill it), or
    two runs started together: the second saves and publishes the cache while the first is between its save and its
    rename. Each must finish, leaving one whole cache and no temporary file."""
    records = load_dataset("jsonl", tiny_dataset)["train"][:6]
    cache = tmp_path / "teacher"
    save, other = teacher.save_file, {}

    def save_while_another_writer_finishes(tensors, filename, metadata=None):
        save(tensors, filename, metadata=metadata)
        if not other:  # the first writer's save: the other writer runs whole now
            other["result"] = None
            other["result"] = teacher_embeddings(records, tiny_models["teacher"], cache, progress=False, device="cpu")

    monkeypatch.setattr(teacher, "save_file", save_while_another_writer_finishes)
    text, image = teacher_embeddings(records, tiny_models["teacher"], cache, progress=False, device="cpu")
    torch.testing.assert_close(other["result"][0], text)
    assert len(cache_files(cache)) == 1 and sorted(p.name for p in cache.iterdir()) == [cache_files(cache)[0].name]
    monkeypatch.setattr(teacher, "save_file", save)
    torch.testing.assert_close(teacher_embeddings(records, tiny_models["teacher"], cache, progress=False)[1], image)


def test_a_cache_file_cut_short_is_computed_again_not_a_traceback(tiny_models, tiny_dataset, tmp_path, caplog):
    """The cache was renamed into place without an fsync, so a power loss could leave it cut short under its name (as
    can a cache folder copied half-way): load_file then raised a bare SafetensorError in every later run."""
    records = load_dataset("jsonl", tiny_dataset)["train"][:6]
    first = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    (path,) = cache_files(tmp_path)
    os.truncate(path, path.stat().st_size // 2)
    again = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert "is not a whole teacher-embedding cache: computing it again" in caplog.text
    (path,) = cache_files(tmp_path)
    assert torch.equal(teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)[0], first[0])


def test_the_cache_is_on_disk_before_it_takes_its_name(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    records = load_dataset("jsonl", tiny_dataset)["train"][:3]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(clfa.files.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    assert len(synced) == 1 and synced[0].endswith(".tmp")


def test_the_cache_is_readable_as_the_umask_allows_and_a_killed_writers_file_goes(tiny_models, tiny_dataset, tmp_path):
    """A cache folder shared by a team: safetensors writes 0600 whatever the umask, which left the cache unreadable to
    the others. A temporary file an hour old is a killed writer's, and is removed by the next writer."""
    import time

    records = load_dataset("jsonl", tiny_dataset)["train"][:3]
    tmp_path.mkdir(exist_ok=True)
    abandoned, fresh = tmp_path / ".teacher-x.safetensors.1-a.tmp", tmp_path / ".teacher-x.safetensors.2-b.tmp"
    abandoned.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(abandoned, (time.time() - 7200,) * 2)
    old = os.umask(0o022)
    try:
        teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    finally:
        os.umask(old)
    (path,) = cache_files(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not abandoned.exists() and fresh.exists()


def test_a_cache_of_other_records_is_no_longer_mapped_when_it_is_replaced(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    """Windows cannot replace a file that is mapped: the tensors load_file read to check the cache map it."""
    from pathlib import Path

    from safetensors.torch import save_file

    records = load_dataset("jsonl", tiny_dataset)["train"][:3]
    first = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    (path,) = cache_files(tmp_path)
    save_file({"text": first[0][:2].contiguous(), "image": first[1][:2].contiguous()}, str(path))
    mapped_then = []
    real_replace = os.replace
    monkeypatch.setattr(clfa.files.os, "replace", lambda src, dst: mapped_then.append(str(dst) in Path("/proc/self/maps").read_text())
                        or real_replace(src, dst))
    again = teacher_embeddings(records, tiny_models["teacher"], tmp_path, progress=False)
    assert mapped_then == [False] and torch.equal(again[0], first[0])


def test_a_teacher_saved_in_half_precision_computes_in_fp32(tiny_models, tiny_dataset, tmp_path):
    """transformers 5 builds a model in the dtype its checkpoint records, and CLIP checkpoints are often saved in fp16:
    the teacher's fp32 pixels would meet fp16 weights. It runs in fp32, its stored weights widened."""
    records = load_dataset("jsonl", tiny_dataset)["train"][:3]
    half = tmp_path / "clip-fp16"
    AutoModel.from_pretrained(tiny_models["teacher"]).to(torch.float16).save_pretrained(half)
    for name in os.listdir(tiny_models["teacher"]):  # the tokenizer and image processor beside the weights
        if not (half / name).exists():
            shutil.copy(os.path.join(tiny_models["teacher"], name), half / name)
    text, image = compute_teacher_embeddings(records, str(half), batch_size=2, progress=False, device="cpu")
    widened = tmp_path / "clip-widened"
    AutoModel.from_pretrained(half, dtype=torch.float32).save_pretrained(widened)
    for name in os.listdir(half):
        if not (widened / name).exists():
            shutil.copy(half / name, widened / name)
    expected = compute_teacher_embeddings(records, str(widened), batch_size=2, progress=False, device="cpu")
    assert text.dtype == image.dtype == torch.float32
    torch.testing.assert_close((text, image), expected)
