"""CascadeEncoderDecoder whose last decode head also predicts uncertainty."""
from __future__ import annotations

from mmseg.models.segmentors import CascadeEncoderDecoder
from mmseg.registry import MODELS

from .uncertainty_encoder_decoder import UncertaintyOutputs


@MODELS.register_module()
class UncertaintyCascadeEncoderDecoder(UncertaintyOutputs, CascadeEncoderDecoder):
    """mmseg's CascadeEncoderDecoder (e.g. OCRNet) whose last stage is
    an uncertainty head, e.g. a
    :class:`~mmseg_uncert.models.decode_heads.DualHead` around OCRNet's
    ``OCRHead``: the earlier stages and training are mmseg's; predictions
    carry ``pred_uncertainty`` (see
    :class:`~mmseg_uncert.models.segmentors.uncertainty_encoder_decoder.UncertaintyOutputs`).
    """
