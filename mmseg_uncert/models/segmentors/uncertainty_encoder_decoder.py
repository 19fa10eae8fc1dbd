"""EncoderDecoder whose decode head also predicts uncertainty maps."""
from __future__ import annotations

from torch import Tensor, nn

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList, SampleList

from .postprocess import samples_with_uncertainty


def final_head(segmentor: nn.Module) -> nn.Module:
    """The decode head that gives a segmentor's prediction: the last stage
    of a cascade (``CascadeEncoderDecoder``), else its only one."""
    head = segmentor.decode_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


class UncertaintyOutputs:
    """Mixin for mmseg segmentors (put it first among the bases) whose final
    decode head's ``predict`` returns C + K channels, the C class logits then
    the K maps named by its ``uncertainty_names``. Whole and slide inference
    carry all of them (the head's ``out_channels`` is C + K). Each data
    sample gets ``seg_logits`` and ``pred_sem_seg`` from the C logits and
    ``pred_uncertainty`` with one (1, H, W) field per name, for
    :class:`~mmseg_uncert.evaluation.UncertaintyMetric`."""

    #: subclasses that also train plain heads (EnsembleDistiller) set False
    requires_uncertainty_head = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = getattr(final_head(self), 'uncertainty_names', None)
        if not names and self.requires_uncertainty_head:
            raise TypeError(
                f'{type(self).__name__} needs a (final) decode head with '
                f'uncertainty_names (e.g. DualHead or HeteroscedasticHead); '
                f'{type(final_head(self)).__name__} has none: use mmseg\'s '
                f'EncoderDecoder (or CascadeEncoderDecoder)')

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        names = getattr(final_head(self), 'uncertainty_names', None)
        if not names:
            return super().postprocess_result(seg_logits, data_samples)
        C = self.num_classes
        return samples_with_uncertainty(self, seg_logits[:, :C], seg_logits[:, C:],
                                        names, data_samples)


@MODELS.register_module()
class UncertaintyEncoderDecoder(UncertaintyOutputs, EncoderDecoder):
    """mmseg's EncoderDecoder for heads that predict named uncertainty maps
    beside the class logits (e.g.
    :class:`~mmseg_uncert.models.decode_heads.DualHead`,
    :class:`~mmseg_uncert.models.decode_heads.HeteroscedasticHead`); see
    :class:`UncertaintyOutputs`. Training is EncoderDecoder's.
    """
