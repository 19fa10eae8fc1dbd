"""PairwiseKDLoss by hand, its scale invariance and its pooled nodes."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_uncert.models.losses import PairwiseKDLoss, affinity


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
