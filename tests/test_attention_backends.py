"""--attention-backends: which SDPA kernels attention calls use, eagerly and compiled (tests/test_trainer.py checks
that the Trainer's training, evaluation and prediction run with them)."""

import pytest
import torch
import torch.nn.functional as F
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch.nn.attention import SDPBackend

from clfa.attention_backends import attention_backends, parse_attention_backends

FLASH_CPU = "aten._scaled_dot_product_flash_attention_for_cpu.default"  # the CPU's fused kernel


def test_names_are_read_in_order_and_mistakes_are_named():
    assert parse_attention_backends(" Efficient, flash,math ") == [
        SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    assert parse_attention_backends("cudnn") == [SDPBackend.CUDNN_ATTENTION]
    assert parse_attention_backends(None) is None and parse_attention_backends("") is None
    with pytest.raises(ValueError, match=r"--attention-backends 'flash,fast': unknown backend\(s\) \['fast'\]"):
        parse_attention_backends("flash,fast")
    with pytest.raises(ValueError, match="named twice"):
        parse_attention_backends("math,flash,math")


def _attention(query, mask):
    return F.scaled_dot_product_attention(query, query, query, attn_mask=mask)


def _compiled_kernels(backends: str | None) -> set[str]:
    """The operators of the forward and backward graphs torch.compile traces for a masked attention call."""
    seen: set[str] = set()

    def record(graph_module, example_inputs):
        seen.update(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    query = torch.randn(2, 2, 5, 8, requires_grad=True)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True
    with attention_backends(backends):
        compiled = torch.compile(_attention, backend=aot_autograd(fw_compiler=record, bw_compiler=record))
        out = compiled(query, mask)
        out.sum().backward()
    torch.testing.assert_close(out, _attention(query, mask))
    return seen


def test_compiled_code_uses_the_backends_in_force_when_it_compiles():
    assert FLASH_CPU in _compiled_kernels(None)
    math = _compiled_kernels("math")
    assert FLASH_CPU not in math and "aten.bmm.default" in math
    assert FLASH_CPU in _compiled_kernels("flash,math")


def test_a_call_no_listed_backend_supports_is_an_error_and_the_choice_ends_with_the_context():
    query = torch.randn(1, 2, 4, 8)
    with attention_backends("efficient"), pytest.raises(RuntimeError, match="No viable backend"):
        F.scaled_dot_product_attention(query, query, query)  # no memory-efficient kernel on a CPU
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()


def test_leaving_the_context_with_no_viable_backend_says_how_to_fix_the_list():
    from clfa.errors import OptionError

    query = torch.randn(1, 2, 4, 8)
    with pytest.raises(OptionError, match="--attention-backends efficient: none of these supports .* end the list with math"):
        with attention_backends("efficient"):
            F.scaled_dot_product_attention(query, query, query)
    with pytest.raises(OptionError, match="--attention-backends flash: none of these supports"):
        with attention_backends("flash"):  # the CPU's flash kernel takes no dropout: "No available kernel"
            F.scaled_dot_product_attention(query, query, query, dropout_p=0.1)
    with pytest.raises(RuntimeError, match="another error") as err, attention_backends("efficient,math"):
        raise RuntimeError("another error")  # other errors pass through as they are
    assert type(err.value) is RuntimeError


def test_contexts_overlapping_in_threads_leave_the_process_wide_setting_as_it_was():
    """One Predictor serving several threads: A enters, B enters, A leaves, B leaves. Each saving and restoring the
    setting on its own left B's saved copy, flash alone, in force for the whole process."""
    import threading

    from torch.nn.attention import _cur_sdpa_kernel_backends

    before = _cur_sdpa_kernel_backends()
    b_entered, a_left, seen = threading.Event(), threading.Event(), {}

    def a():
        with attention_backends("flash"):
            b_entered.wait(5)
        a_left.set()

    def b():
        with attention_backends("flash"):
            b_entered.set()
            a_left.wait(5)
            seen["b"] = _cur_sdpa_kernel_backends()  # still flash alone: A's leaving did not take B's setting away

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen["b"] == [SDPBackend.FLASH_ATTENTION]
    assert _cur_sdpa_kernel_backends() == before


def test_a_context_of_other_backends_waits_for_those_in_force_in_other_threads():
    import threading

    from torch.nn.attention import _cur_sdpa_kernel_backends

    entered, release, seen = threading.Event(), threading.Event(), []

    def holder():
        with attention_backends("flash"):
            entered.set()
            release.wait(5)
            seen.append(("flash", _cur_sdpa_kernel_backends()))

    def other():
        entered.wait(5)
        with attention_backends("math"):
            seen.append(("math", _cur_sdpa_kernel_backends()))

    threads = [threading.Thread(target=holder), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    entered.wait(5)
    release.set()
    for thread in threads:
        thread.join(10)
    assert seen == [("flash", [SDPBackend.FLASH_ATTENTION]), ("math", [SDPBackend.MATH])]


def test_a_thread_alone_under_a_context_may_nest_another_list_and_one_sharing_it_may_not():
    import threading

    from torch.nn.attention import _cur_sdpa_kernel_backends

    before = _cur_sdpa_kernel_backends()
    with attention_backends("flash,math"):
        with attention_backends("math"):
            assert _cur_sdpa_kernel_backends() == [SDPBackend.MATH]
            with attention_backends("math"):  # the list in force already: nothing changes
                assert _cur_sdpa_kernel_backends() == [SDPBackend.MATH]
        assert _cur_sdpa_kernel_backends() == [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    assert _cur_sdpa_kernel_backends() == before

    entered, done = threading.Event(), threading.Event()

    def other():
        with attention_backends("flash,math"):
            entered.set()
            done.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        entered.wait(5)
        with attention_backends("flash,math"):
            with pytest.raises(RuntimeError, match=r"attention backends math asked for inside a context of flash,math that "
                                                   r"other threads share"):
                with attention_backends("math"):
                    pass
            assert _cur_sdpa_kernel_backends() == [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    finally:
        done.set()
        thread.join(10)
    assert _cur_sdpa_kernel_backends() == before
