"""EncoderDecoder whose decode head also predicts uncertainty maps."""
from __future__ import annotations

from torch import Tensor, nn

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

    def encode_decode_parts(self, inputs: Tensor, batch_img_metas: list[dict]
                            ) -> tuple[Tensor, Tensor]:
        """``encode_decode``'s class logits (B, C, H, W) and maps (B, K, H, W)
        apart, from the final head's ``predict_parts``: what the ONNX graph
        outputs, with no concatenation built to be cut (a copy of every
        full-resolution map each way: 2.2 ms of the demo student's 26 ms
        graph at 256x512). The stages run as mmseg's ``encode_decode`` runs
        them: a cascade's earlier stages' ``forward``, then the last one."""
        x = self.extract_feat(inputs)
        stages = (list(self.decode_head) if isinstance(self.decode_head, nn.ModuleList)
                  else [self.decode_head])
        prev: tuple[Tensor, ...] = ()
        for stage in stages[:-1]:
            prev = (stage.forward(x, *prev), )
        return stages[-1].predict_parts(x, *prev, batch_img_metas, self.test_cfg)

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
