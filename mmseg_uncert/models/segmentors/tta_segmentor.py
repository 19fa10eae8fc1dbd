"""Test-time augmentation on tensors: the flipped and rescaled views of a
batch as the members of a predictive distribution (a distillation teacher)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from torch import Tensor, nn

from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..decode_heads.uncertainty_head import split_outputs, uncertainty_names
from .cascade import final_head
from .ensemble_segmentor import EnsembleSegmentor
from .members import build_member
from .predictive_segmentor import PredictiveSegmentor, class_probabilities
from .slide_inference import model_inference


def view_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """(h, w) of a view at ``scale``, rounded as mmcv's ``Resize`` with
    ``scale_factor`` rounds (``int(x * scale + 0.5)``), so that a view here
    has the size of the same view made by a ``tta_pipeline``."""
    return tuple(max(1, int(s * scale + 0.5)) for s in size)


def check_views(scales: Sequence[float], flips: Sequence[bool], owner: str) -> None:
    """At least two distinct views, every scale positive."""
    if not scales or not flips:
        raise ValueError(f'{owner}: scales and flips must each hold at least one '
                         f'value, got scales={list(scales)}, flips={list(flips)}')
    if any(s <= 0 for s in scales):
        raise ValueError(f'{owner}: scales must be > 0, got {list(scales)}')
    if len(set(scales)) != len(scales) or len(set(flips)) != len(flips):
        raise ValueError(f'{owner}: scales {list(scales)} or flips {list(flips)} '
                         f'repeat a value; a repeated view only counts one '
                         f'prediction twice')
    if len(scales) * len(flips) < 2:
        raise ValueError(
            f'{owner}: scales={list(scales)} and flips={list(flips)} make '
            f'{len(scales) * len(flips)} view; TTA needs at least two views '
            f'(flips and/or scales), e.g. flips=(False, True)')


@MODELS.register_module()
class TTASegmentor(PredictiveSegmentor):
    """Test-time augmentation of one segmentor on tensors, its V views
    treated as the members of a predictive distribution (Ayhan & Berens,
    "Test-time Data Augmentation for Estimation of Heteroscedastic Aleatoric
    Uncertainty in Deep Neural Networks", MIDL 2018; Wang et al., "Aleatoric
    uncertainty estimation with test-time augmentation for medical image
    segmentation with convolutional neural networks", Neurocomputing 2019).

    For a batch x of size (H, W) and each view v = (s, f), s in ``scales``
    (outer loop) and f in ``flips`` (inner loop, horizontal), in the order
    of mmcv's ``TestTimeAug``:

        x_v = flip_f(resize(x, (⌊sH + ½⌋, ⌊sW + ½⌋)))       (bilinear)
        p_v = softmax(resize(flip_f(g(x_v)), (H, W)))

    g the model's class logits (its ``inference``, whole or slide); for
    MaskFormer-style heads s/Σs of the semantic scores (see
    :func:`~.predictive_segmentor.class_probabilities`). The flip is undone
    and the logits brought back to the input's grid before the softmax,
    as mmseg's post-processing does to each view of ``tools/test.py --tta``
    (:class:`~.uncertainty_tta_model.UncertaintyTTAModel`). The V maps are
    folded like an ensemble's members (p̄, total = H[p̄], aleatoric =
    (1/V) Σ_v H[p_v], epistemic = their difference, std at the prediction,
    variation ratio; see :mod:`mmseg_uncert.models.uncertainty`), so it is
    a distillation teacher (``EnsembleDistiller(teacher=dict(type=
    'TTASegmentor', ...))``) and a test model of its own (``tools/test.py``
    without ``--tta``: the views are made on the test batch).

    With ``members`` instead of ``model``, every member of an ensemble sees
    every view (views outer, members inner): M·V maps p_mv, folded the same
    way. Their mutual information splits by the chain rule into the
    members' disagreement and the views' within a member,

        I(y; m, v) = I(y; m) + I(y; v | m),

    with I(y; m) = H[p̄] − (1/M) Σ_m H[p̄_m], p̄_m = (1/V) Σ_v p_mv, the
    epistemic map of an ensemble of the members' TTA predictions. The
    teacher costs M·V forward passes.

    A padded batch is rescaled and flipped with its padding (a flipped view
    sees it on the other side); the maps cover the whole grid, as an
    ensemble's do, and distillation leaves batch padding out.

    Config::

        model = dict(type='TTASegmentor',
                     model=dict(config='configs/fastscnn/'
                                'fast-scnn_1xb4-1k_synthetic-128x256.py',
                                checkpoint='work_dirs/.../iter_1000.pth'),
                     scales=(0.75, 1.0, 1.25), flips=(False, True))
        # TTA of an ensemble
        model = dict(type='TTASegmentor',
                     members=[dict(config=..., checkpoint=...), ...],
                     scales=(1.0, ), flips=(False, True))

    Args:
        model: the segmentor, as an ensemble member is given:
            ``dict(config, checkpoint)`` or ``dict(model=DICT, checkpoint)``.
        scales: rescaling factors of the views; the default is the
            ``img_ratios`` of ``configs/_base_/datasets/synthetic_streets.py``.
        flips: whether a view is flipped horizontally (False, True or both).
        members: instead of ``model``, the member specs of an ensemble (see
            :class:`~.ensemble_segmentor.EnsembleSegmentor`), each seeing
            every view.
        test_cfg, data_preprocessor, untrained: see
            :class:`~.predictive_segmentor.PredictiveSegmentor`.
    """

    def __init__(self,
                 model: dict[str, Any] | str | None = None,
                 scales: Sequence[float] = (0.75, 1.0, 1.25),
                 flips: Sequence[bool] = (False, True),
                 members: Sequence[dict[str, Any] | str] | None = None,
                 test_cfg: dict | None = None,
                 data_preprocessor: dict | None = None,
                 **untrained: Any) -> None:
        init_cfg = self.check_untrained_arguments('TTASegmentor', untrained)
        scales, flips = tuple(float(s) for s in scales), tuple(bool(f) for f in flips)
        check_views(scales, flips, 'TTASegmentor')
        if (model is None) == (members is None):
            raise ValueError('TTASegmentor: give either model (one segmentor) or '
                             'members (an ensemble\'s member specs), not both')
        if members is not None:
            segmentor = EnsembleSegmentor(members, test_cfg, data_preprocessor)
            info = dict(segmentor.member_info[0],
                        data_preprocessor=segmentor.data_preprocessor_cfg)
        else:
            segmentor, info = build_member(model, 'TTA model', test_cfg)
        self._init_around(segmentor, info, data_preprocessor, init_cfg)
        if not all(callable(getattr(m, 'inference', None)) for m in self.view_models):
            raise TypeError(f"TTASegmentor: {info['source']} builds a "
                            f"{type(segmentor).__name__}, which has no inference(inputs, "
                            f"metas) giving class logits; wrap one EncoderDecoder, or "
                            f"give an ensemble's specs as members")
        self.scales, self.flips = scales, flips

    @property
    def view_models(self) -> list[nn.Module]:
        """The segmentors that see every view: the ensemble's members, or the
        one model."""
        if isinstance(self.model, EnsembleSegmentor):
            if self.model.stream_members:
                raise ValueError('TTASegmentor: its ensemble streams its members '
                                 '(stream_members=True), so they cannot see every '
                                 'view in turn; give TTASegmentor members=[...]')
            return list(self.model.members)
        return [self.model]

    @property
    def num_views(self) -> int:
        """V = len(scales) · len(flips)."""
        return len(self.scales) * len(self.flips)

    def member_bands(self, inputs: Tensor, batch_img_metas: list[dict]
                     ) -> Iterator[Iterator[tuple[int, Tensor]]]:
        """The V views' class probabilities (B, C, H, W) on the input's grid,
        for each view those of every member (M·V maps), each as one band (a
        rescaled view's rows are final only when it is whole)."""
        size = tuple(inputs.shape[2:])
        for scale in self.scales:
            shape = view_size(size, scale)
            scaled = inputs if shape == size else resize(
                inputs, shape, mode='bilinear', align_corners=False)
            for flip in self.flips:
                view = scaled.flip(3) if flip else scaled
                for model in self.view_models:
                    # the head resizes its output to pad_shape (else img_shape):
                    # the view's own size
                    metas = [dict(m, img_shape=shape, pad_shape=shape)
                             for m in batch_img_metas]
                    # an uncertainty head's model gives its class logits first
                    logits, _ = split_outputs(model_inference(model, view, metas),
                                              uncertainty_names(final_head(model)))
                    if flip:
                        logits = logits.flip(3)
                    if shape != size:
                        logits = resize(logits, size, mode='bilinear',
                                        align_corners=self.align_corners)
                    yield iter([(0, class_probabilities(model, logits))])
