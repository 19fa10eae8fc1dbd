"""Test-time augmentation checks: sharpened random models and the naive
maps of augmented views."""
import pytest
import torch
import torch.nn.functional as F

from mmseg.structures import SegDataSample

from mmseg_uncert.models import UNCERTAINTY_NAMES


@pytest.fixture(autouse=True, scope='module')
def flush_denormals():
    """A random model's activations in eval mode are ~1e-9 and their
    products denormal, which makes CPU convolutions about 50x slower; a
    trained model has none. Flushing them to zero keeps the tests fast (an
    autouse fixture of the test files that import it)."""
    supported = torch.set_flush_denormal(True)  # False where the CPU cannot
    yield
    if supported:
        torch.set_flush_denormal(False)

def _sharpen(model: torch.nn.Module, seed: int,
             images: torch.Tensor | None = None) -> torch.nn.Module:
    """A seeded random model whose views disagree, as a trained one's do. At
    random init the features vanish in eval mode and the classifier (std
    0.01) predicts the uniform distribution: BN statistics are taken from
    ``images`` (normalised; default noise) so that features are of unit
    scale, and the classifier gives logits of standard deviation about 2
    (confident, not saturated: one-hot views would tie exactly in their mean)
    with a random bias (no two classes tie where the features are zero)."""
    torch.manual_seed(seed)
    # every weight from the seed: init_weights leaves some layers with the
    # values drawn when the model was built
    for module in model.modules():
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    model.init_weights()
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None  # the plain mean over the batch
    model.train()
    with torch.no_grad():
        model.decode_head(model.extract_feat(
            torch.randn(4, 3, 32, 64) if images is None else images))
        classifier = model.decode_head.conv_seg
        classifier.weight.normal_(0, 2.0 / classifier.in_channels**0.5)
        classifier.bias.normal_(0, 0.5)
    return model.eval()


def _naive_maps(probs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The maps of V probability maps (..., C, H, W), by the formulas."""
    stack = torch.stack(probs).double()
    views, num_classes = stack.shape[0], stack.shape[-3]
    mean = stack.mean(0)
    total = -torch.special.xlogy(mean, mean).sum(-3)
    aleatoric = -torch.special.xlogy(stack, stack).sum(-3).mean(0)
    pred = mean.argmax(-3, keepdim=True)
    at_pred = stack.gather(-3, pred.expand(views, *pred.shape)).squeeze(-3)
    votes = F.one_hot(stack.argmax(-3), num_classes).sum(0)
    first, second = stack.topk(2, dim=-3).values.unbind(-3)
    clear_views = ((first - second) > 1e-5).all(0)
    return dict(mean=mean, pred=pred.squeeze(-3), clear_views=clear_views,
                total=total, aleatoric=aleatoric,
                epistemic=total - aleatoric, std=at_pred.std(0, unbiased=False),
                variation_ratio=1 - votes.amax(-1).double() / views)


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    """The model's class logits at x's size, from its backbone and head."""
    logits = model.decode_head(model.extract_feat(x))
    return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)


def _assert_maps(sample: SegDataSample, naive: dict, atol: float = 1e-5) -> None:
    """The sample's maps against the naive ones. Where two classes tie (to
    rounding) in p̄ or in a view, the argmax may fall either way: there the
    prediction must be one of the tied classes, and std and variation_ratio
    (which follow the argmax) are compared on the other pixels only."""
    mean = naive['mean']
    assert torch.allclose(sample.seg_logits.data.exp().double(), mean, atol=atol)
    pred = sample.pred_sem_seg.data[0]
    first, second = mean.topk(2, dim=-3).values.unbind(-3)
    assert (mean.gather(-3, pred[None]).squeeze(-3) >= first - atol).all()
    clear = ((first - second) > atol) & naive['clear_views']
    assert clear.double().mean() > 0.9
    assert torch.equal(pred[clear], naive['pred'][clear])
    for name in UNCERTAINTY_NAMES:
        got = sample.pred_uncertainty.get(name)
        assert got.shape[0] == 1, name
        where = clear if name in ('std', 'variation_ratio') else torch.ones_like(clear)
        assert torch.allclose(got[0].double()[where], naive[name][where], atol=atol), name
    assert naive['epistemic'].max() > 1e-2  # the views do disagree
