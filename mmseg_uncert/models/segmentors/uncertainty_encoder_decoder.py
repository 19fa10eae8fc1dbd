"""EncoderDecoder whose decode head also predicts uncertainty maps."""
from __future__ import annotations

from torch import Tensor

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList, SampleList

from ..decode_heads.uncertainty_head import UncertaintyHead
from .cascade import final_head
from .postprocess import samples_with_uncertainty


class UncertaintyOutputs:
    """Mixin for mmseg segmentors (put it first among the bases) whose final
    decode head is an :class:`~mmseg_uncert.models.decode_heads.UncertaintyHead`:
    its ``predict`` returns C + K channels, the C class logits then the K
    maps named by its ``uncertainty_names``. Whole and slide inference carry
    all of them (the head's ``out_channels`` is C + K). Each data sample
    gets ``seg_logits`` and ``pred_sem_seg`` from the C logits and
    ``pred_uncertainty`` with one (1, H, W) field per name, for
    :class:`~mmseg_uncert.evaluation.UncertaintyMetric`."""

    #: subclasses that also train plain heads (EnsembleDistiller) set False
    requires_uncertainty_head = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        head = final_head(self)
        if not isinstance(head, UncertaintyHead) and self.requires_uncertainty_head:
            raise TypeError(
                f'{type(self).__name__} needs a (final) decode head that predicts '
                f'uncertainty maps (an UncertaintyHead: DualHead, HeteroscedasticHead '
                f'or DirichletHead); {type(head).__name__} is not one: use mmseg\'s '
                f'EncoderDecoder (or CascadeEncoderDecoder)')

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        head = final_head(self)
        if not isinstance(head, UncertaintyHead):
            return super().postprocess_result(seg_logits, data_samples)
        logits, maps = head.split(seg_logits)
        return samples_with_uncertainty(self, logits, maps, head.uncertainty_names,
                                        data_samples)


@MODELS.register_module()
class UncertaintyEncoderDecoder(UncertaintyOutputs, EncoderDecoder):
    """mmseg's EncoderDecoder for heads that predict named uncertainty maps
    beside the class logits (e.g.
    :class:`~mmseg_uncert.models.decode_heads.DualHead`,
    :class:`~mmseg_uncert.models.decode_heads.HeteroscedasticHead`); see
    :class:`UncertaintyOutputs`. Training is EncoderDecoder's.
    """
