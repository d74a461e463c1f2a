"""The Trainer as a CLFA run uses it (clfa.trainer): clipping and FLOP counts as the stock Trainer's, loader workers and\ntheir seeds, whole steps in one CUDA graph, compile and attention-backend options, each refused where it cannot run."""

import json
import multiprocessing
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback, TrainerState

from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.trainer import PrinterToStderr, ProgressToStderr, check_cuda_graph_support, check_fuse_linears_support, end_loader_workers
from clfa.training import build_model, build_trainer, train, training_arguments
from conftest import Interrupt, tiny_options


def test_trainer_clips_and_counts_flops_as_the_stock_trainer_does(tiny_models, tmp_path):
    """CLFATrainer lists the parameters and counts them once per run instead of at every step; the clipped gradients,
    the returned norm and the FLOP estimate must be the stock Trainer's."""
    from transformers import AutoImageProcessor, Trainer

    from clfa import CLFAModel
    from clfa.data.processing import ImageTransform

    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24, fusion_heads=2)
    opts = tiny_options(tiny_models, tmp_path)
    trainer = build_trainer(opts, model, ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"])), [{}] * 8)
    trainer.args.max_grad_norm = 0.05  # small enough that clipping changes every gradient
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 20, (4, 10), generator=g), "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "pixel_values": torch.randn(4, 3, 16, 16, generator=g), "labels": torch.tensor([0, 1, 1, 0]),
              "teacher_text_embeds": torch.randn(4, 24, generator=g), "teacher_image_embeds": torch.randn(4, 24, generator=g)}
    model(**inputs).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    norms, clipped = [], []
    for clip in (Trainer._clip_grad_norm, type(trainer)._clip_grad_norm):
        for name, p in model.named_parameters():
            if name in grads:
                p.grad = grads[name].clone()
        norms.append(clip(trainer, model))
        clipped.append({name: p.grad.clone() for name, p in model.named_parameters() if name in grads})
    assert norms[0].item() > 10 * trainer.args.max_grad_norm
    torch.testing.assert_close(norms[1], norms[0])
    for name in grads:
        torch.testing.assert_close(clipped[1][name], clipped[0][name], rtol=0, atol=0, msg=name)
        assert not torch.equal(clipped[1][name], grads[name]) or not grads[name].any()

    stock = Trainer.floating_point_ops(trainer, inputs)
    assert stock > 0 and trainer.floating_point_ops(inputs) == stock == trainer.floating_point_ops(inputs)


def test_the_default_options_are_the_papers_and_reach_the_optimizer_and_schedule(tiny_models, tmp_path):
    """DESIGN.md section 1 and the paper's section 3.2: AdamW, lr 1e-5, weight decay 0.01 (not on biases and norms),
    linear warm-up over the first 10% of the steps then linear decay to 0, batch 8, 15 epochs, the best dev checkpoint
    by F1; the model's settings as the paper gives them."""
    from clfa.options import TrainOptions

    paper = dict(text_model="bert-base-uncased", image_model="google/vit-base-patch32-224-in21k",
                 teacher="openai/clip-vit-base-patch32", fusion="cross_attention", alignment="clfa", alignment_weight=1.0,
                 temperature=0.1, alignment_pooling="mean", align_dim=512, mapping_hidden_dim=1536, fusion_layers=3,
                 fusion_heads=8, fusion_ffn_dim=2048, dropout=0.1, max_text_length=77, learning_rate=1e-5,
                 weight_decay=0.01, warmup_ratio=0.1, batch_size=8, epochs=15, metric="f1")
    defaults = TrainOptions()
    assert {name: getattr(defaults, name) for name in paper} == paper
    optimisation = ("learning_rate", "weight_decay", "warmup_ratio", "batch_size", "epochs", "metric")
    opts = tiny_options(tiny_models, tmp_path, **{name: paper[name] for name in optimisation})
    args = training_arguments(opts, has_dev=True)
    assert (args.per_device_train_batch_size, args.num_train_epochs) == (8, 15)
    assert (args.metric_for_best_model, args.greater_is_better, args.load_best_model_at_end) == ("f1", True, True)
    # Clipping is no setting of the paper's: the released code's 1.0, or another, or none.
    assert args.max_grad_norm == 1.0
    assert training_arguments(tiny_options(tiny_models, tmp_path, max_grad_norm=0.0), has_dev=True).max_grad_norm == 0.0

    model = build_model(opts, ["0", "1"], "1")
    trainer = build_trainer(opts, model, None, [], args=training_arguments(opts, has_dev=False))
    trainer.create_optimizer_and_scheduler(num_training_steps=200)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    decay = {name for name, p in model.named_parameters() for group in trainer.optimizer.param_groups
             if group["weight_decay"] == 0.01 and any(p is q for q in group["params"])}
    assert "fusion.layers.0.q.weight" in decay and "text_mapping.0.weight" in decay and "classifier.1.weight" in decay
    assert not any(name.endswith("bias") or "norm" in name.lower() for name in decay)
    rates = []
    for _ in range(201):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates[0] == 0 and rates[20] == pytest.approx(1e-5) and max(rates) == pytest.approx(1e-5)
    assert rates[10] == pytest.approx(5e-6) and rates[110] == pytest.approx(5e-6) and rates[200] == 0


def test_the_running_loss_sum_is_an_attribute_as_others_are(tiny_models, tmp_path):
    """It is summed in float64 once a training loop sets it; before, it is absent as any unset attribute is: hasattr,
    getattr with a default and inspect.getmembers raised a KeyError on a new trainer."""
    import inspect

    opts = tiny_options(tiny_models, tmp_path)
    trainer = build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [])
    assert not hasattr(trainer, "_tr_loss") and getattr(trainer, "_tr_loss", None) is None
    assert "_tr_loss" not in dict(inspect.getmembers(trainer))
    trainer._tr_loss = torch.tensor(0.0)  # as the Trainer's loop starts
    trainer._tr_loss += torch.tensor(0.1)
    assert trainer._tr_loss.dtype == torch.float64 and trainer._tr_loss.item() == torch.tensor(0.1).item()


def test_iterating_a_loader_leaves_the_global_random_state_alone(tiny_models, tiny_dataset, tmp_path):
    from transformers import AutoImageProcessor

    from clfa.data.processing import CLFADataset, ImageTransform

    data = load_dataset("jsonl", tiny_dataset)
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    model = build_model(tiny_options(tiny_models, tmp_path), data.labels, data.positive_label)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    dataset = CLFADataset(data["train"], tokenizer, transform, 16, model.config.label2id)
    trainer = build_trainer(tiny_options(tiny_models, tmp_path, num_workers=1), model, transform, dataset, dataset)
    # The train loader's sampler draws each epoch's order from it, as every run does at every epoch; the workers'
    # seed, drawn once per new iterator, comes from the loader's own generator.
    train_loader, eval_loader = trainer.get_train_dataloader(), trainer.get_eval_dataloader()
    assert getattr(train_loader, "base_dataloader", train_loader).generator.initial_seed() == trainer.args.seed
    before = torch.get_rng_state()
    next(iter(eval_loader))
    assert torch.equal(torch.get_rng_state(), before)
    for loader in (train_loader, eval_loader):
        end_loader_workers(loader)


def test_cuda_graph_option_trains_exactly_as_the_trainer_steps_do(tiny_models, tiny_dataset, tmp_path):
    """--cuda-graph moves clipping and the AdamW update into the training step (on a GPU captured with the rest of
    it); where no GPU captures it, the run must be the standard one, weight for weight, metric for metric."""
    data = load_dataset("jsonl", tiny_dataset)  # 48 training samples: no partial batch for --cuda-graph to drop
    runs = {graph: train(tiny_options(tiny_models, tmp_path / str(graph), epochs=2, cuda_graph=graph), data) for graph in (False, True)}
    assert runs[True]["train"]["steps"] == runs[False]["train"]["steps"] == 12
    for split in ("dev", "test"):
        assert runs[True][split] == runs[False][split]
    weights = {graph: load_file(tmp_path / str(graph) / "run" / "model.safetensors") for graph in runs}
    for name, tensor in weights[False].items():
        torch.testing.assert_close(weights[True][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    state = json.loads(next((tmp_path / "True" / "run" / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert logged and all({"ce_loss", "alignment_loss"} <= entry.keys() for entry in logged)
    # Above the default max_grad_norm of 1: clipping, which the whole step folds into the update, changed every
    # logged step.
    assert all(entry["grad_norm"] > 1.0 for entry in logged)


@pytest.mark.parametrize("overlap", [False, True], ids=["one_stream", "side_by_side"])
def test_whole_steps_learn_with_dropout_evaluate_and_resume(tiny_models, tiny_dataset, tmp_path, overlap):
    """On a GPU each step is captured and replayed: dropout draws new random numbers at every replay; evaluation,
    checkpoints, a resume (which captures again) and the best-checkpoint reload all happen around a captured step.
    On a CPU the same whole steps run eagerly, through the same checkpoints and resume."""
    data = load_dataset("jsonl", tiny_dataset)
    common = dict(epochs=8, cuda_graph=True, overlap_towers=overlap, dropout=0.1)
    full = train(tiny_options(tiny_models, tmp_path / "full", **common), data)
    assert full["test"]["accuracy"] >= 0.8 and full["train"]["steps"] == 8 * 6
    assert full["best_checkpoint"]
    opts = tiny_options(tiny_models, tmp_path / "cut", **common)
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt()])
    with pytest.raises(OptionError, match=r"holds checkpoints of an earlier run: add --resume to continue it"):
        train(opts, data)  # a fresh run would mix its checkpoints with these
    resumed = train(opts, data, resume=True)
    assert resumed["train"]["steps"] == full["train"]["steps"]
    assert resumed["test"]["accuracy"] >= 0.8


def test_cuda_graph_refuses_what_a_captured_step_cannot_do(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True, gradient_accumulation_steps=2, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match=r"gradient accumulation \(2 micro-batches.*'reduce-overhead'"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()  # refused before any cache was filled
    # Arguments of one's own may ask for what clfa's options cannot: the Trainer refuses it too.
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True)
    args = training_arguments(opts, has_dev=False)
    args.gradient_checkpointing = True
    with pytest.raises(ValueError, match=r"does not support gradient checkpointing \(it saves and restores"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)



def test_cuda_graph_refuses_a_compile_mode_set_for_accelerate(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    # `accelerate launch` passes its compile mode in the environment, where the Trainer picks it up.
    monkeypatch.setenv("ACCELERATE_DYNAMO_MODE", "reduce-overhead")
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True, compile=True)
    with pytest.raises(OptionError, match=r"does not support torch.compile mode 'reduce-overhead', which captures"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    # Arguments of one's own may pick a backend that captures graphs too.
    monkeypatch.delenv("ACCELERATE_DYNAMO_MODE")
    args = training_arguments(opts, has_dev=False)
    args.torch_compile_backend = "cudagraphs"
    with pytest.raises(OptionError, match=r"does not support torch.compile backend 'cudagraphs'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)


def test_cuda_graph_refuses_a_compile_backend_set_for_accelerate_without_compile(tiny_models, tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    # A backend in the environment makes the Trainer compile the model even though --compile is off.
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "cudagraphs")
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True)
    with pytest.raises(OptionError, match=r"does not support torch.compile backend 'cudagraphs'"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")
    monkeypatch.setenv("ACCELERATE_DYNAMO_MODE", "max-autotune")
    with pytest.raises(OptionError, match=r"does not support torch.compile mode 'max-autotune'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=training_arguments(opts, has_dev=False))
    # A mode alone compiles nothing, so it is no reason to refuse.
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    check_cuda_graph_support(training_arguments(opts, has_dev=False))


def test_a_compile_backend_set_for_accelerate_is_taken_as_compiling_without_compile(tiny_models, tiny_dataset, tmp_path,
                                                                                    monkeypatch):
    """The Trainer compiles with ACCELERATE_DYNAMO_BACKEND whatever --compile says: the last partial batch goes (a
    new shape would recompile), and --fuse-linears has a graph to rewrite."""
    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path)
    model = build_model(opts, data.labels, data.positive_label)
    train_set = [{"input_ids": torch.zeros(4, dtype=torch.long)}] * 13
    eager = build_trainer(opts, model, None, train_set, args=training_arguments(opts, has_dev=False))
    assert len(eager.get_train_dataloader()) == 2  # 8 + 5
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")
    args = training_arguments(opts, has_dev=False)
    assert not args.torch_compile
    assert len(build_trainer(opts, model, None, train_set, args=args).get_train_dataloader()) == 1
    check_fuse_linears_support(args)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "aot_eager")
    with pytest.raises(OptionError, match="--fuse-linears is a pass of .* inductor backend, not of 'aot_eager'"):
        check_fuse_linears_support(args)


def test_overlap_towers_without_cuda_graph_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, overlap_towers=True)
    with pytest.raises(ValueError, match="--overlap-towers .* needs --cuda-graph"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()


def test_fuse_linears_without_compile_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, fuse_linears=True)
    with pytest.raises(ValueError, match="--fuse-linears .* needs --compile"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()
    # The Trainer refuses it too, for code that builds one itself, and with a backend that is not inductor.
    with pytest.raises(ValueError, match="--fuse-linears .* needs --compile"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [])
    opts.compile = True
    args = training_arguments(opts, has_dev=False)
    args.torch_compile_backend = "aot_eager"
    with pytest.raises(ValueError, match="--fuse-linears is a pass of .* inductor backend, not of 'aot_eager'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


class LoaderWorkers(TrainerCallback):
    """Records the child processes (the data loader workers) alive at each training and evaluation step."""

    def __init__(self):
        self.pids: set[int] = set()

    def on_step_end(self, args, state, control, **kwargs):
        self.pids |= children()

    def on_prediction_step(self, args, state, control, **kwargs):
        self.pids |= children()


def test_loader_workers_end_with_the_call_that_started_them(tiny_models, tiny_dataset, tmp_path):
    """Persistent loader workers end when train, evaluate or predict ends, not when the garbage collector frees the
    Trainer (it would find their queues closed and wait 5 s for each worker); a later call starts new ones."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from clfa.data.processing import CLFADataset, ImageTransform

    before = children()
    data = load_dataset("jsonl", tiny_dataset)
    workers = LoaderWorkers()
    metrics = train(tiny_options(tiny_models, tmp_path / "run", epochs=1, num_workers=2), data, callbacks=[workers])
    assert metrics["train"]["steps"] == 6 and len(workers.pids - before) >= 2
    assert children() <= before

    # The Trainer keeps its evaluation loader for the next evaluation, which then starts workers of its own.
    opts = tiny_options(tiny_models, tmp_path / "again", epochs=1, num_workers=2, alignment="none", image_cache=False)
    model = build_model(opts, data.labels, data.positive_label)
    transform = ImageTransform(AutoImageProcessor.from_pretrained(opts.image_model))
    dev = CLFADataset(data["dev"], AutoTokenizer.from_pretrained(opts.text_model), transform, model.config.max_text_length,
                      model.config.label2id)
    # No evaluation during training: the calls here are the evaluations.
    trainer = build_trainer(opts, model, transform, dev, dev, callbacks=[workers], args=training_arguments(opts, has_dev=False))
    results = []
    for call in (trainer.evaluate, trainer.train, trainer.evaluate):
        workers.pids.clear()
        results.append(call())
        assert len(workers.pids - before) >= 2 and children() <= before, call.__name__
    assert results[2]["eval_loss"] != results[0]["eval_loss"]  # trained in between


def test_attention_backends_are_those_of_training_evaluation_and_prediction(tiny_models, tiny_dataset, tmp_path, fused_attention_kernels):
    from transformers import AutoImageProcessor, AutoTokenizer, set_seed

    from clfa.data.processing import CLFADataset, ImageTransform

    data = load_dataset("jsonl", tiny_dataset)
    runs = {}
    for backends in (None, "math"):
        opts = tiny_options(tiny_models, tmp_path / str(backends), max_steps=2, alignment="none", image_cache=False,
                            attention_backends=backends)
        set_seed(0)
        model = build_model(opts, data.labels, data.positive_label)
        transform = ImageTransform(AutoImageProcessor.from_pretrained(opts.image_model))
        tokenizer = AutoTokenizer.from_pretrained(opts.text_model)
        train_set, dev = (CLFADataset(data[split], tokenizer, transform, model.config.max_text_length, model.config.label2id)
                          for split in ("train", "dev"))
        trainer = build_trainer(opts, model, transform, train_set, dev, args=training_arguments(opts, has_dev=False))
        calls, results = [], []
        for call in (trainer.evaluate, trainer.train, lambda: trainer.predict(dev)):
            with fused_attention_kernels() as kernels:
                results.append(call())
            calls.append(kernels.calls)
        runs[backends] = (results[0]["eval_loss"], calls)
        assert torch.backends.cuda.flash_sdp_enabled()  # PyTorch's own choice again once the calls have ended
    default_loss, default_calls = runs[None]
    math_loss, math_calls = runs["math"]
    assert all(sum(calls.values()) > 0 for calls in default_calls)  # on a CPU its flash kernel, on a GPU another
    assert math_calls == [Counter()] * 3
    assert math_loss == pytest.approx(default_loss, rel=1e-5)  # the same model, before training: the same loss


def test_an_unknown_attention_backend_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, attention_backends="flash,fastest")
    with pytest.raises(ValueError, match=r"unknown backend\(s\) \['fastest'\]"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()




@pytest.mark.parametrize("callback", [PrinterToStderr, ProgressToStderr])
def test_the_trainers_log_lines_are_lines_to_read_on_stderr(callback, capsys):
    state = TrainerState(global_step=20, max_steps=300)
    printer = callback()
    printer.on_train_begin(None, state, None)
    printer.on_log(None, state, None, logs={"loss": 0.693147, "grad_norm": 1.25, "learning_rate": 1e-05, "epoch": 0.4,
                                            "total_flos": 123.0})
    printer.on_log(None, state, None, logs={"eval_loss": 0.5, "eval_accuracy": 0.875, "eval_runtime": 1.5,
                                            "eval_samples_per_second": 320.0, "eval_steps_per_second": 10.0, "epoch": 0.4})
    out, err = capsys.readouterr()
    assert out == ""
    assert [line.rsplit("\r", 1)[-1] for line in err.splitlines() if "step" in line] == [
        "step 20/300 (epoch 0.4): loss 0.6931, grad_norm 1.25, learning_rate 1e-05",
        "step 20/300 (epoch 0.4): eval_loss 0.5, eval_accuracy 0.875, eval_runtime 1.5"]
