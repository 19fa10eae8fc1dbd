"""Head taps: outputs a tap cannot follow are named; a subclass is followed."""
from __future__ import annotations

import pytest
import torch

from mmseg.models.decode_heads import PSPHead
from mmseg.registry import MODELS

from mmseg_uncert.models.decode_heads import UnsupportedHeadError
from mmseg_uncert.models.segmentors import mmseg_scope


@MODELS.register_module()
class _DoubledLogitsHead(PSPHead):
    """Returns its classifier's output doubled: not what conv_seg gave."""

    def forward(self, inputs):
        return 2 * super().forward(inputs)


@MODELS.register_module()
class _TwiceClassifiedHead(PSPHead):
    """Calls its classifier twice in one forward."""

    def forward(self, inputs):
        out = super().forward(inputs)
        return out + self.conv_seg(self._transform_inputs(inputs)[:, :self.channels] * 0
                                   + 1)


@MODELS.register_module()
class _MyPSPHead(PSPHead):
    """A user's subclass: an extra scale on the logits, applied before conv_seg."""

    def cls_seg(self, feat):
        return self.conv_seg(0.5 * feat)


def _psp(type_: str) -> dict:
    return dict(type=type_, in_channels=8, channels=8, pool_scales=(1, 2), num_classes=4,
                norm_cfg=dict(type='BN'))


def _features():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 8, 16, 16, generator=g)]


def test_a_head_whose_outputs_cannot_be_followed_names_the_head_and_what_it_returned():
    with mmseg_scope():
        doubled = MODELS.build(dict(type='DualHead', head=_psp('_DoubledLogitsHead')))
        twice = MODELS.build(dict(type='DualHead', head=_psp('_TwiceClassifiedHead')))
    doubled.eval(), twice.eval()
    with pytest.raises(UnsupportedHeadError,
                       match=r"_DoubledLogitsHead returned a tensor of shape \(2, 4, 16, 16\), "
                             r"none of which is its classifier conv_seg's output"):
        doubled(_features())
    with pytest.raises(UnsupportedHeadError,
                       match='_TwiceClassifiedHead called its classifier conv_seg 2 times'):
        twice(_features())


def test_a_users_subclass_is_followed_by_what_it_does():
    """No type whitelist: the subclass's prediction is its own, and the branch
    reads what its conv_seg reads (0.5 x the features, by hand)."""
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=_psp('_MyPSPHead'),
                                 read_probabilities=False))
        bare = MODELS.build(_psp('_MyPSPHead'))
    bare.load_state_dict(dual.head.state_dict())
    dual.eval(), bare.eval()
    x = _features()
    with torch.no_grad():
        scores, raw, feature = dual.forward_with_uncertainty(x)
        expected = bare(x)
        bottleneck = bare._forward_feature(x)  # the features before cls_seg's 0.5
    assert torch.equal(scores, expected)
    assert torch.allclose(feature, 0.5 * bottleneck)
    assert torch.allclose(raw, dual.uncertainty_branch(0.5 * bottleneck), atol=1e-6)
