"""ProDA's class prototypes: their update and logits, against hand values and cdist."""
import pytest
import torch

from mmseg_uncert.models import class_feature_sums, ema_prototypes, prototype_logits


def test_prototype_update_by_hand():
    # 2x2 feature map, 2 channels; classes 0 (two pixels), 2 (one), one ignored
    feature = torch.tensor([[[1.0, 3.0], [5.0, 7.0]],
                            [[2.0, 4.0], [6.0, 8.0]]])[None]
    label = torch.tensor([[[0, 0], [2, 1]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    sums, counts = class_feature_sums(feature, label, 4, valid)
    assert counts.tolist() == [2, 0, 1, 0]
    assert sums[0].tolist() == [4, 6] and sums[2].tolist() == [5, 6]
    prototypes = torch.tensor([[10.0, 10.0], [1.0, 1.0], [0.0, 0.0], [9.0, 9.0]])
    initialised = torch.tensor([True, True, False, True])
    ema_prototypes(prototypes, initialised, sums, counts, decay=0.9)
    # class 0: 0.9 * 10 + 0.1 * mean (2, 3)
    assert prototypes[0].tolist() == pytest.approx([9.2, 9.3])
    assert prototypes[1].tolist() == [1.0, 1.0]          # absent: untouched
    assert prototypes[2].tolist() == [5.0, 6.0]          # first seen: the mean
    assert prototypes[3].tolist() == [9.0, 9.0]
    assert initialised.tolist() == [True, True, True, True]


def test_prototype_logits_against_cdist():
    torch.manual_seed(1)
    feature = torch.randn(2, 6, 3, 4)
    prototypes = torch.randn(5, 6)
    initialised = torch.tensor([True, True, False, True, True])
    logits = prototype_logits(feature, prototypes, initialised, temperature=2.0)
    flat = feature.permute(0, 2, 3, 1).reshape(-1, 6)
    expected = -torch.cdist(flat, prototypes) / 2.0
    got = logits.permute(0, 2, 3, 1).reshape(-1, 5)
    keep = initialised.nonzero()[:, 0]
    assert torch.allclose(got[:, keep], expected[:, keep], atol=1e-5)
    assert torch.all(got.softmax(1)[:, 2] == 0)
    with pytest.raises(ValueError, match='6 channels, the prototypes 4'):
        prototype_logits(feature, torch.randn(5, 4), initialised)


def test_prototype_logits_on_normalised_features_against_cdist():
    torch.manual_seed(2)
    feature = torch.randn(2, 6, 3, 4) * 7
    prototypes = torch.randn(5, 6) * 3
    initialised = torch.ones(5, dtype=torch.bool)
    logits = prototype_logits(feature, prototypes, initialised, temperature=0.1,
                              normalise=True)
    flat = feature.permute(0, 2, 3, 1).reshape(-1, 6)
    unit = flat / flat.norm(dim=1, keepdim=True)
    eta = prototypes / prototypes.norm(dim=1, keepdim=True)
    expected = -torch.cdist(unit, eta) / 0.1
    assert torch.allclose(logits.permute(0, 2, 3, 1).reshape(-1, 5), expected, atol=1e-4)
    # the distance of unit vectors is sqrt(2 - 2 cos): it lies in [0, 2]
    assert (logits * -0.1).max() <= 2 + 1e-6


def test_per_image_sums_and_updates_by_hand():
    """ProDA's update: one per image and class, classes under the pixel
    minimum skipped, images in order."""
    # image 0: class 0 on 3 pixels, class 1 on 1; image 1: class 0 on 1, class 1 on 3
    feature = torch.tensor([[[[1.0, 2.0], [3.0, 10.0]]],
                            [[[5.0, 6.0], [7.0, 8.0]]]])
    label = torch.tensor([[[0, 0], [0, 1]], [[0, 1], [1, 1]]])
    sums, counts = class_feature_sums(feature, label, 3, per_image=True)
    assert counts.tolist() == [[3, 1, 0], [1, 3, 0]]
    assert sums[:, :, 0].tolist() == [[6, 10, 0], [5, 21, 0]]
    # the pooled form is their sum
    pooled = class_feature_sums(feature, label, 3)
    assert torch.equal(pooled[0], sums.sum(0)) and torch.equal(pooled[1], counts.sum(0))
    prototypes = torch.tensor([[0.0], [4.0], [9.0]])
    initialised = torch.tensor([True, True, True])
    updates = ema_prototypes(prototypes, initialised, sums, counts, decay=0.5,
                             min_count=2)
    # class 0: image 0 only (mean 2): 0.5 * 0 + 0.5 * 2 = 1; image 1 has 1 pixel
    # class 1: image 1 only (mean 7): 0.5 * 4 + 0.5 * 7 = 5.5
    assert prototypes[:, 0].tolist() == [1.0, 5.5, 9.0]
    assert updates.tolist() == [1, 1, 0]
    # no minimum: both images, one after the other
    prototypes = torch.tensor([[0.0], [4.0], [9.0]])
    updates = ema_prototypes(prototypes, initialised, sums, counts, decay=0.5)
    assert prototypes[:, 0].tolist() == [0.5 * (0.5 * 0 + 0.5 * 2) + 0.5 * 5,
                                         0.5 * (0.5 * 4 + 0.5 * 10) + 0.5 * 7, 9.0]
    assert updates.tolist() == [2, 2, 0]
