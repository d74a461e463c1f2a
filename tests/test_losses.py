import pytest
import torch
import torch.nn.functional as F

from clfa.losses import contrastive_alignment_loss


def reference_loss(student, teacher, temperature, mask=None):
    """The formula written out sample by sample, independent of the library's vectorised code."""
    if student.dim() == 3:
        pooled = []
        for i in range(student.shape[0]):
            keep = mask[i].bool() if mask is not None else torch.ones(student.shape[1], dtype=torch.bool)
            pooled.append(student[i][keep].mean(0))
        student = torch.stack(pooled)
    b = student.shape[0]
    sim = torch.empty(b, b)
    for i in range(b):
        for j in range(b):
            sim[i, j] = F.cosine_similarity(student[i], teacher[j], dim=0) / temperature
    s2t = -sum(torch.log_softmax(sim[i], 0)[i] for i in range(b)) / b
    t2s = -sum(torch.log_softmax(sim[:, j], 0)[j] for j in range(b)) / b
    return 0.5 * s2t + 0.5 * t2s


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_formula_on_pooled_features(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    got = contrastive_alignment_loss(student, teacher, temperature=temperature)
    torch.testing.assert_close(got, reference_loss(student, teacher, temperature), rtol=1e-5, atol=1e-5)


def test_matches_formula_with_mask_mean_pooling():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 7, 12, generator=g), torch.randn(5, 12, generator=g)
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    got = contrastive_alignment_loss(student, teacher, mask=mask)
    torch.testing.assert_close(got, reference_loss(student, teacher, 0.1, mask), rtol=1e-5, atol=1e-5)
    # Without the mask every token counts, which is a different loss.
    unmasked = contrastive_alignment_loss(student, teacher)
    torch.testing.assert_close(unmasked, reference_loss(student, teacher, 0.1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, unmasked)


def test_cls_pooling_uses_first_token():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(4, 6, 8, generator=g), torch.randn(4, 8, generator=g)
    got = contrastive_alignment_loss(student, teacher, pooling="cls")
    torch.testing.assert_close(got, reference_loss(student[:, 0], teacher, 0.1), rtol=1e-5, atol=1e-5)


def test_padded_tokens_get_no_gradient_and_teacher_none():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(4, 6, 8, generator=g, requires_grad=True)
    teacher = torch.randn(4, 8, generator=g, requires_grad=True)
    mask = torch.ones(4, 6)
    mask[1, 2:] = 0
    contrastive_alignment_loss(student, teacher, mask=mask).backward()
    assert torch.all(student.grad[1, 2:] == 0)
    assert torch.all(student.grad[1, :2].abs().sum(-1) > 0)
    assert teacher.grad is None


def test_matched_pairs_give_lower_loss_than_shuffled():
    g = torch.Generator().manual_seed(4)
    teacher = torch.randn(8, 16, generator=g)
    aligned = contrastive_alignment_loss(teacher + 0.01 * torch.randn(8, 16, generator=g), teacher)
    shuffled = contrastive_alignment_loss(teacher.roll(1, 0), teacher)
    assert aligned < 0.01 < shuffled


def test_logits_stay_float32_under_bf16_autocast():
    # The training step runs under bf16 autocast; the loss must not round its similarities to bf16.
    torch.manual_seed(0)
    student = torch.randn(16, 8, 32, requires_grad=True)
    teacher, mask = torch.randn(16, 32), torch.ones(16, 8)
    exact = contrastive_alignment_loss(student, teacher, temperature=0.1, mask=mask)
    (grad_exact,) = torch.autograd.grad(exact, student)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = contrastive_alignment_loss(student, teacher, temperature=0.1, mask=mask)
    (grad,) = torch.autograd.grad(under_autocast, student)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, grad_exact, rtol=1e-5, atol=1e-7)
