"""EncoderDecoder whose decode head also predicts uncertainty maps."""
from __future__ import annotations

from torch import Tensor

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList, SampleList

from .postprocess import samples_with_uncertainty


@MODELS.register_module()
class UncertaintyEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder for heads that predict named uncertainty maps
    beside the class logits (e.g.
    :class:`~mmseg_uncert.models.decode_heads.HeteroscedasticHead`).

    The head's ``predict`` returns C + K channels, the C class logits then
    the K maps named by its ``uncertainty_names``; whole and slide inference
    carry all of them (the head's ``out_channels`` is C + K). Each data
    sample gets ``seg_logits`` and ``pred_sem_seg`` from the C logits and
    ``pred_uncertainty`` with one (1, H, W) field per name, for
    :class:`~mmseg_uncert.evaluation.UncertaintyMetric`. Training is
    EncoderDecoder's.
    """

    #: subclasses that also train plain heads (EnsembleDistiller) set False
    requires_uncertainty_head = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = getattr(self.decode_head, 'uncertainty_names', None)
        if not names and self.requires_uncertainty_head:
            raise TypeError(
                f'UncertaintyEncoderDecoder needs a decode head with '
                f'uncertainty_names (e.g. HeteroscedasticHead); '
                f'{type(self.decode_head).__name__} has none: use EncoderDecoder')

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        if not getattr(self.decode_head, 'uncertainty_names', None):
            return super().postprocess_result(seg_logits, data_samples)
        C = self.num_classes
        return samples_with_uncertainty(self, seg_logits[:, :C], seg_logits[:, C:],
                                        self.decode_head.uncertainty_names,
                                        data_samples)
