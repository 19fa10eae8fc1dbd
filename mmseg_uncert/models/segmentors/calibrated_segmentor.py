"""Any trained segmentor with its seg logits calibrated post hoc."""
from __future__ import annotations

import inspect
import os.path as osp
from typing import Any

import torch
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList

from ..frozen import FrozenChildren
from .deployment import deployed_model
from .members import mmseg_scope
from .predictive_segmentor import PredictiveSegmentor, batch_metas


@MODELS.register_module()
class CalibratedSegmentor(FrozenChildren, BaseSegmentor):
    """A trained segmentor whose ``seg_logits`` pass through a calibrator.

    The wrapped model is any config this package evaluates (a member, an
    ensemble or MC dropout, a distillation or ProDA config, deployed as the
    network it trains); the calibrator (:class:`TemperatureScaling`,
    :class:`VectorScaling`, :class:`LocalTemperatureScaling`) maps its
    logits z to calibrated ones, so ``tools/test.py``, ``IoUMetric`` and
    ``UncertaintyMetric`` see the calibrated softmax: ECE, NLL, Brier and
    the ``max_prob``/``entropy`` scores change; ``pred_sem_seg`` is the
    calibrated argmax (the same for the temperatures). The wrapped model's
    ``pred_uncertainty`` maps (e.g. an ensemble's epistemic) are kept as it
    gave them: they are not functions of the calibrated logits alone.

    The calibrator works on each image's logits at its original size, as the
    metrics see them; local temperature scaling also gets the network's
    input image brought to that size by the same post-processing (padding
    cropped, flip undone, resized).

    The wrapped model is a frozen child: it is not trained, not in this
    model's checkpoints, and it loads its own checkpoint. The calibrator's
    fitted values are in the config (temperature, scales and biases) or, for
    a network, in ``calibrator_checkpoint``. ``tools/calibrate.py`` fits
    one and writes the config.

    Config::

        model = dict(type='CalibratedSegmentor',
                     model=dict(config='configs/fcn/...py', checkpoint='iter_1000.pth'),
                     calibrator=dict(type='TemperatureScaling', temperature=1.37))

    Args:
        model: ``dict(config=PATH, checkpoint=PATH or None)`` (None for an
            ensemble or MC-dropout config, whose members name theirs).
        calibrator: the calibrator's config (``num_classes``, where it takes
            one, defaults to the model's).
        calibrator_checkpoint: a file with the calibrator's state dict.
        data_preprocessor: unused, the wrapped model's is used.
        untrained: ``train_cfg``, ``pretrained``, ``init_cfg``, as every mmseg
            segmentor takes them (see
            :meth:`~.predictive_segmentor.PredictiveSegmentor.check_untrained_arguments`).
    """

    #: the wrapped model names its own checkpoint: tools/test.py needs none
    carries_weights: bool = True

    def __init__(self, model: dict[str, Any], calibrator: dict,
                 calibrator_checkpoint: str | None = None,
                 data_preprocessor: dict | None = None,
                 **untrained: Any) -> None:
        init_cfg = PredictiveSegmentor.check_untrained_arguments('CalibratedSegmentor',
                                                                 untrained)
        if not isinstance(model, dict) or 'config' not in model or (
                set(model) - {'config', 'checkpoint'}):
            raise ValueError(f'CalibratedSegmentor: model must be dict(config=PATH, '
                             f'checkpoint=PATH or None), got {model!r}')
        wrapped = deployed_model(model['config'], model.get('checkpoint'))
        super().__init__(data_preprocessor=wrapped.data_preprocessor, init_cfg=init_cfg)
        self.add_frozen('model', wrapped)
        self.num_classes = wrapped.num_classes
        self.out_channels = getattr(wrapped, 'out_channels', wrapped.num_classes)
        self.align_corners = getattr(wrapped, 'align_corners', False)
        self.dataset_meta = getattr(wrapped, 'dataset_meta', None)
        calibrator = dict(calibrator)
        with mmseg_scope():
            calibrator_cls = MODELS.get(calibrator.get('type', ''))
        if calibrator_cls is None:
            raise KeyError(f"CalibratedSegmentor: calibrator type "
                           f"{calibrator.get('type')!r} is not registered; use "
                           f"TemperatureScaling, VectorScaling or LocalTemperatureScaling")
        if 'num_classes' in inspect.signature(calibrator_cls).parameters:
            # the model's classes, unless the config names them
            calibrator.setdefault('num_classes', self.num_classes)
        with mmseg_scope():
            self.calibrator = MODELS.build(calibrator)
        if calibrator_checkpoint is not None:
            if not osp.isfile(calibrator_checkpoint):
                raise FileNotFoundError(
                    f'CalibratedSegmentor: calibrator_checkpoint {calibrator_checkpoint} '
                    f'does not exist; fit it with tools/calibrate.py')
            state = torch.load(calibrator_checkpoint, map_location='cpu', weights_only=True)
            self.calibrator.load_state_dict(state)
        # fitted values are not to be trained or re-initialised by a runner
        self.calibrator.requires_grad_(False)

    def init_weights(self) -> None:
        """The wrapped model and the calibrator hold fitted values."""

    @staticmethod
    def images_at_output_size(segmentor: BaseSegmentor, inputs: Tensor,
                              data_samples: SampleList) -> list[Tensor]:
        """Each network input image (3, H, W) brought to its sample's
        original size by mmseg's post-processing (padding cropped, flip
        undone, bilinear resize), as the seg logits were."""
        carriers = [SegDataSample(metainfo=s.metainfo) for s in data_samples]
        restored = BaseSegmentor.postprocess_result(segmentor, inputs.float(), carriers)
        return [sample.seg_logits.data for sample in restored]

    def predict_uncalibrated(self, inputs: Tensor, data_samples: OptSampleList = None
                             ) -> tuple[SampleList, list[Tensor]]:
        """The wrapped model's predictions and, per sample, the input image
        at the prediction's size."""
        with torch.no_grad():
            samples = self.model.predict(inputs, data_samples)
        return samples, self.images_at_output_size(self, inputs, samples)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Data samples with calibrated ``seg_logits`` and their argmax."""
        samples, images = self.predict_uncalibrated(inputs, data_samples)
        with torch.no_grad():
            for sample, image in zip(samples, images):
                logits = self.calibrator(sample.seg_logits.data[None], image[None])[0]
                sample.seg_logits = PixelData(data=logits)
                sample.pred_sem_seg = PixelData(data=logits.max(0, keepdim=True).indices)
        return samples

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Calibrated logits at the input's resolution."""
        return self.calibrator(self.model.encode_decode(inputs, batch_img_metas), inputs)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        return self.encode_decode(inputs, batch_metas(inputs, data_samples))

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        return self.model.extract_feat(inputs)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        raise RuntimeError('CalibratedSegmentor is for inference; fit its calibrator '
                           'with tools/calibrate.py, train the model on its own')
