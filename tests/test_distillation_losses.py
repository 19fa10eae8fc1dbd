"""Distillation losses against hand computations and invariances."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_uncert.models.losses import (FeatureMimicLoss, PairwiseKDLoss,
                                        PixelKDLoss, UncertaintyRegressionLoss,
                                        affinity, pixel_kd)


def test_pixel_kd_is_zero_for_a_student_equal_to_the_teacher():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=g)
    for t in (1.0, 3.0):
        teacher = (logits / t).softmax(1)
        # float32 rounding of two log-softmaxes, a few eps times |z / T| + log C
        # each, times the T² the loss carries
        bound = t**2 * 8 * torch.finfo(torch.float32).eps * (
            logits.abs().max().item() / t + math.log(5))
        assert pixel_kd(logits, teacher, t).item() == pytest.approx(0.0, abs=bound)


def test_pixel_kd_by_hand():
    # one pixel, two classes, T = 2
    student = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    q = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # softmax(z / T)
    kl = 0.25 * math.log(0.25 / p[0]) + 0.75 * math.log(0.75 / p[1])
    got = PixelKDLoss(temperature=2.0)(student, q)
    assert got.item() == pytest.approx(4 * kl, rel=1e-6)


def test_pixel_kd_leaves_ignored_pixels_out():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(1, 3, 2, 2, generator=g)
    teacher = torch.randn(1, 3, 2, 2, generator=g).softmax(1)
    valid = torch.tensor([[[True, False], [True, True]]])
    base = pixel_kd(student, teacher, 1.0, valid)
    changed = student.clone()
    changed[:, :, 0, 1] = torch.tensor([50.0, -50.0, 0.0])
    assert pixel_kd(changed, teacher, 1.0, valid).item() == pytest.approx(base.item())
    by_hand = [pixel_kd(student[:, :, i:i + 1, j:j + 1], teacher[:, :, i:i + 1, j:j + 1])
               for i, j in ((0, 0), (1, 0), (1, 1))]
    assert base.item() == pytest.approx(sum(v.item() for v in by_hand) / 3)


def test_pairwise_kd_by_hand_and_scale_invariance():
    # 2 channels on a 1x2 grid: node vectors (1, 0) and (1, 1)/sqrt 2
    student = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])
    a = affinity(student, (1, 2))
    c = 1 / math.sqrt(2)
    assert torch.allclose(a, torch.tensor([[[1.0, c], [c, 1.0]]]), atol=1e-6)
    loss = PairwiseKDLoss(node_scale=0.5)  # 1x2 cells: a node each
    assert loss.grid(student) == (1, 2)
    teacher_aff = torch.eye(2).unsqueeze(0)  # orthogonal teacher nodes
    assert loss(student, teacher_aff).item() == pytest.approx(2 * c ** 2 / 4)
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 8, 8, 8, generator=g)
    t = torch.randn(2, 16, 8, 8, generator=g)
    grid = loss.grid(s)
    ref = loss(s, affinity(t, grid))
    assert loss(s * 7.5, affinity(t * 0.01, grid)).item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize('node_scale,size,grid', [
    (0.5, (64, 128), (2, 2)), (0.25, (64, 128), (4, 4)), (0.5, (65, 129), (3, 3)),
    (1.0, (7, 9), (1, 1)), (1 / 16, (16, 32), (16, 16))])
def test_pairwise_nodes_as_the_official_code_pools(node_scale, size, grid):
    """Liu et al.'s code max-pools both maps with a kernel of ``pool_scale``
    times the feature size (stride = kernel, ceil mode) and compares
    Σ (a_T − a_S)² / N² / B: the same grid, and on divisible sizes the same
    value, computed here their way."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 6, *size, generator=g)
    t = torch.randn(2, 10, *size, generator=g)
    loss = PairwiseKDLoss(node_scale=node_scale)
    assert loss.grid(s) == grid
    kernel = [max(1, int(n * node_scale)) for n in size]

    def official_similarity(f):
        f = F.max_pool2d(f, kernel, kernel, ceil_mode=True)
        assert tuple(f.shape[2:]) == grid
        f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
        f = f.flatten(2)
        return torch.einsum('icm,icn->imn', f, f)

    official = ((official_similarity(t) - official_similarity(s)) ** 2).sum() / (
        grid[0] * grid[1]) ** 2 / 2
    ours = loss(s, affinity(t, loss.grid(s)))
    if all(n % k == 0 for n, k in zip(size, kernel)):
        assert ours.item() == pytest.approx(official.item(), rel=1e-5)


def test_pairwise_student_pooled_to_the_teachers_grid():
    """The distiller takes the grid from the teacher's features (they exist
    before the student runs): a student map of another size is max-pooled
    to that grid, each node the max over its adaptive-pooling cells (for 8
    cells into 3 nodes: [0, 3), [2, 6), [5, 8))."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(1, 3, 8, 8, generator=g)
    t = torch.randn(1, 5, 12, 12, generator=g)
    loss = PairwiseKDLoss(node_scale=1 / 3)
    grid = loss.grid(t)
    assert grid == (3, 3) and loss.grid(s) == (4, 4)  # the student's own grid differs
    cells = [(0, 3), (2, 6), (5, 8)]
    nodes = torch.stack([s[0, :, a:b, c:d].amax((1, 2)) for a, b in cells for c, d in cells],
                        1).double()  # float64: only the loss's own float32 rounding remains
    nodes = nodes / nodes.norm(dim=0, keepdim=True)
    teacher = affinity(t, grid)
    expected = ((nodes.T @ nodes - teacher[0].double()) ** 2).sum() / 9 ** 2
    assert loss(s, teacher, grid).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match='differ'):
        loss(s, teacher)  # its own 4x4 grid against the teacher's 3x3


def test_feature_mimic_adapts_channels_and_size():
    loss = FeatureMimicLoss(student_channels=4, teacher_channels=6)
    s, t = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 16, 16)
    assert loss(s, t).item() > 0
    same = FeatureMimicLoss(student_channels=6, teacher_channels=6)
    assert same(t, t).item() == 0.0
    with pytest.raises(ValueError, match='5 channels.*built for 6'):
        loss(s, torch.randn(1, 5, 8, 8))


def test_uncertainty_forms_by_hand():
    raw = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    target = torch.tensor([0.25, 0.5]).view(1, 1, 1, 2)
    mse = UncertaintyRegressionLoss(form='mse')
    expected = ((0.5 - 0.25) ** 2 + (torch.sigmoid(torch.tensor(2.0)).item() - 0.5) ** 2) / 2
    assert mse(raw, target).item() == pytest.approx(expected)
    rmsle = UncertaintyRegressionLoss(form='rmsle')
    v = F.softplus(raw).flatten()
    d = torch.log1p(v) - torch.log1p(target.flatten())
    assert rmsle(raw, target).item() == pytest.approx(d.pow(2).mean().sqrt().item(), rel=1e-5)
    # ignored pixels leave the mean
    valid = torch.tensor([[[True, False]]])
    assert mse(raw, target, valid).item() == pytest.approx(0.0625)


def test_distribution_form_decodes_bins_and_is_minimal_at_the_target():
    loss = UncertaintyRegressionLoss(form='distribution', value_range=(0.0, 1.0),
                                     num_bins=4, sigma=0.75)
    raw = torch.full((1, 4, 1, 1), -30.0)
    raw[0, 2] = 30.0  # all mass on bin 2, centre 0.625
    assert loss.decode(raw).item() == pytest.approx(0.625)
    target = torch.tensor([0.3]).view(1, 1, 1, 1)
    mass, index = loss._bin_targets(target)
    assert index.item() == 1 and mass.sum().item() == pytest.approx(1.0)
    # the cross-entropy is smallest when the predicted bins are the target's
    best = loss(mass.log().view(1, 4, 1, 1), target)
    worse = loss(torch.zeros(1, 4, 1, 1), target)
    assert best < worse
    with pytest.raises(ValueError, match='form must be one of'):
        UncertaintyRegressionLoss(form='l1')
    with pytest.raises(ValueError, match=r'do not fit targets.*64 outputs'):
        UncertaintyRegressionLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_class_weighted_cross_entropy_matches_torch_and_accepts_ignored_pixels():
    from mmseg_uncert.models.losses import ClassWeightedCrossEntropyLoss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    label = torch.randint(0, 4, (2, 5, 6), generator=g)
    label[0, :2] = 255
    weights = [0.5, 2.0, 1.0, 3.0]
    loss = ClassWeightedCrossEntropyLoss(weights)(logits, label, ignore_index=255)
    expected = torch.nn.functional.cross_entropy(
        logits, label, weight=torch.tensor(weights), ignore_index=255)
    # float32 log-softmax: a few eps times |z| + log C per pixel, whatever
    # order the two implementations sum in
    bound = 8 * torch.finfo(torch.float32).eps * (logits.abs().max().item() + math.log(4))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=bound)
    # by hand on one pixel: w_y * CE / w_y = CE
    one = ClassWeightedCrossEntropyLoss(weights)(logits[:1, :, 4:5, 0:1], label[:1, 4:5, 0:1])
    by_hand = -logits[0, :, 4, 0].log_softmax(0)[label[0, 4, 0]]
    assert one.item() == pytest.approx(by_hand.item(), rel=1e-6, abs=bound)
    # every pixel ignored: 0, with a gradient path
    logits.requires_grad_(True)
    none = ClassWeightedCrossEntropyLoss(weights)(logits, torch.full_like(label, 255))
    none.backward()
    assert none.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match='3 class weights for 4 classes'):
        ClassWeightedCrossEntropyLoss(weights[:3])(logits, label)
