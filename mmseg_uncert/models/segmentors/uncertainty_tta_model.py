"""``tools/test.py --tta`` with uncertainty: the augmented views of the
config's ``tta_pipeline`` folded like the members of an ensemble."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import PixelData
from torch import Tensor, nn

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import SampleList

from ..precision import at_least_float32
from ..uncertainty import UNCERTAINTY_NAMES, PredictiveStatistics
from .members import mmseg_scope
from .predictive_segmentor import _log_prob, class_probabilities

#: metainfo that describes one view, not the image: left out of the merged
#: sample (whose prediction is on the original image)
_VIEW_KEYS = frozenset(('img_shape', 'pad_shape', 'scale_factor', 'flip',
                        'flip_direction', 'padding_size', 'img_padding_size'))

_PIPELINE_HINT = ("give the TestTimeAug of the config's `tta_pipeline` more than "
                  "one Resize scale_factor and/or both RandomFlip(prob=0.) and "
                  "RandomFlip(prob=1.), as configs/_base_/datasets/"
                  "synthetic_streets.py does")


@MODELS.register_module()
class UncertaintyTTAModel(BaseTTAModel):
    """Test-time augmentation with a per-pixel uncertainty split, for
    ``tools/test.py --tta`` (``tta_model = dict(type='UncertaintyTTAModel')``,
    set in ``configs/_base_/default_runtime.py``).

    mmseg's ``SegTTAModel`` averages the views' softmax and keeps only
    ``pred_sem_seg``. Here the V views of an image (the config's
    ``tta_pipeline``: scales x flips) are the members of a predictive
    distribution (Ayhan & Berens, "Test-time Data Augmentation for Estimation
    of Heteroscedastic Aleatoric Uncertainty in Deep Neural Networks", MIDL
    2018; Wang et al., Neurocomputing 2019). Each view's prediction is
    restored to the original image (padding cropped, flip undone, resized to
    ``ori_shape``) by the wrapped model's own post-processing; its class
    probabilities p_v are the softmax of its ``seg_logits`` (s/Σs for
    MaskFormer-style heads, see
    :func:`~.predictive_segmentor.class_probabilities`) and are folded one
    view at a time into
    :class:`~mmseg_uncert.models.uncertainty.PredictiveStatistics`, the
    ensemble's maths:

        p̄ = (1/V) Σ_v p_v,   total = H[p̄],   aleatoric = (1/V) Σ_v H[p_v],
        epistemic = total − aleatoric,   std = sqrt((1/V) Σ_v (p_v,ĉ − p̄_ĉ)²),
        variation_ratio = 1 − f/V  (ĉ = argmax p̄, f the modal vote count).

    Each merged data sample gets what
    :class:`~.ensemble_segmentor.EnsembleSegmentor` gives, so
    ``UncertaintyMetric`` scores it: ``seg_logits`` = log p̄,
    ``pred_sem_seg`` = argmax p̄, ``pred_uncertainty`` with one (1, H, W)
    map per name in :data:`~mmseg_uncert.models.uncertainty.UNCERTAINTY_NAMES`;
    and the image's ground truth (``gt_sem_seg``, ``gt_aleatoric``,
    ``gt_ood``: every ``gt_*`` field, which must be the same in every view)
    and metainfo (``img_path``, ``ori_shape``, ...; the views' own sizes and
    flips left out).

    A wrapped model that gives its own maps (an ensemble, MC dropout, a
    DualHead student: samples with ``pred_uncertainty``) keeps them: their
    mean over the views, restored like the logits, is added under its names
    prefixed :attr:`wrapped_prefix` (``wrapped_epistemic``, ...), next to
    the views' maps (the ensemble's ``epistemic`` is about its members, the
    TTA ``epistemic`` about the views of the ensemble's p̄).

    Views are folded as they come (per image the running sums: three class
    maps and an entropy map; never the V predictions at once). For TTA on tensors (a
    distillation teacher) see :class:`~.tta_segmentor.TTASegmentor`.

    Args:
        module: the model to test (``tools/test.py`` puts the config's
            ``model`` here).
        data_preprocessor: see mmengine's ``BaseTTAModel`` (the wrapped
            model's own preprocessor normalises each view).
    """

    #: name prefix of the view means of the wrapped model's own maps
    wrapped_prefix: str = 'wrapped_'

    def __init__(self, module: dict | nn.Module,
                 data_preprocessor: dict | nn.Module | None = None) -> None:
        with mmseg_scope():
            super().__init__(module=module, data_preprocessor=data_preprocessor)

    def test_step(self, data: dict) -> SampleList:
        """Run the wrapped model on each augmented view of the batch (the
        output of ``pseudo_collate`` on ``TestTimeAug`` samples:
        ``inputs[v][i]``, ``data_samples[v][i]`` for view v of image i) and
        merge the views of each image."""
        views = self._views(data)
        folds: list[_ViewFold] | None = None
        for view in views:
            samples = self.module.test_step(view)
            if folds is None:
                folds = [_ViewFold(self.module, self.wrapped_prefix) for _ in samples]
            for fold, sample in zip(folds, samples):
                fold.add(sample)
        return [fold.merged() for fold in folds]

    def merge_preds(self, data_samples_list: list[SampleList]) -> SampleList:
        """Merge ``data_samples_list[i]``, the V view predictions of image i
        (mmengine's interface; :meth:`test_step` folds the views as they
        come instead)."""
        merged = []
        for views in data_samples_list:
            _check_view_count(len(views), views[0].metainfo.get('img_path'))
            fold = _ViewFold(self.module, self.wrapped_prefix)
            for sample in views:
                fold.add(sample)
            merged.append(fold.merged())
        return merged

    @staticmethod
    def _views(data: Any) -> list[dict]:
        """One batch per view, checked to be TTA data with >= 2 views."""
        inputs = data.get('inputs') if isinstance(data, dict) else None
        if (not isinstance(inputs, (list, tuple)) or not inputs
                or not all(isinstance(view, (list, tuple)) for view in inputs)):
            raise ValueError(
                "UncertaintyTTAModel: the test batch holds no augmented views; it "
                "runs on the data of the config's `tta_pipeline` (a TestTimeAug "
                "transform), which tools/test.py --tta puts in place of the test "
                "pipeline (test_dataloader.dataset.pipeline = tta_pipeline)")
        samples = data.get('data_samples') or [[]]
        first = samples[0][0] if samples[0] else None
        _check_view_count(len(inputs),
                          first.metainfo.get('img_path') if first else None)
        return [{key: value[v] for key, value in data.items()}
                for v in range(len(inputs))]


def _check_view_count(count: int, img_path: str | None) -> None:
    if count < 2:
        raise ValueError(
            f'UncertaintyTTAModel: {count} augmented view of image '
            f'{img_path or "?"}; TTA needs at least two views (flips and/or '
            f'scales) to measure uncertainty over them: {_PIPELINE_HINT}')


def view_probabilities(model: nn.Module, logits: Tensor) -> Tensor:
    """Class probabilities (B, C, H, W) from a view's restored ``seg_logits``:
    :func:`~.predictive_segmentor.class_probabilities` for a segmentor with
    a decode head; the softmax for one without (an ensemble or MC-dropout
    model, whose ``seg_logits`` are log p̄: softmax gives p̄ back)."""
    if hasattr(model, 'decode_head'):
        return class_probabilities(model, logits)
    return logits.softmax(1)


class _ViewFold:
    """One image's views, folded one at a time."""

    def __init__(self, model: nn.Module, wrapped_prefix: str) -> None:
        self.model = model
        self.wrapped_prefix = wrapped_prefix
        self.stats = PredictiveStatistics()
        self.metainfo: dict | None = None
        self.ground_truth: dict[str, Any] = {}
        self.wrapped_sums: dict[str, Tensor] = {}

    def add(self, sample: SegDataSample) -> None:
        logits = sample.seg_logits.data
        img = sample.metainfo.get('img_path', '?')
        view = self.stats.count
        if logits.shape[0] == 1:
            raise ValueError(
                f'UncertaintyTTAModel: image {img}: the model predicts one channel '
                f'(a sigmoid head, out_channels=1); the uncertainty maps need class '
                f'probabilities: use out_channels=num_classes (softmax)')
        if self.metainfo is None:
            self.metainfo = {k: v for k, v in sample.metainfo.items()
                             if k not in _VIEW_KEYS}
            self.metainfo['img_shape'] = tuple(logits.shape[1:])
            self.ground_truth = {k: sample.get(k) for k in sample.keys()
                                 if k.startswith('gt_')}
            self._check_ground_truth(img, tuple(logits.shape[1:]))
        else:
            self._check_same(sample, img, view)
        self.stats.add(view_probabilities(self.model, logits[None]))
        maps = sample.get('pred_uncertainty')
        names = set(maps.keys()) if maps is not None else set()
        if view > 0 and names != set(self.wrapped_sums):
            raise ValueError(f'UncertaintyTTAModel: image {img}: view {view} has '
                             f'uncertainty maps {sorted(names)}, view 0 '
                             f'{sorted(self.wrapped_sums)}')
        for name in names:
            value = at_least_float32(maps.get(name))
            self.wrapped_sums[name] = (value.clone() if view == 0
                                       else self.wrapped_sums[name].add_(value))

    def _check_ground_truth(self, img: str, shape: tuple[int, ...]) -> None:
        for key, value in self.ground_truth.items():
            if isinstance(value, PixelData) and tuple(value.shape) != shape:
                raise ValueError(
                    f'UncertaintyTTAModel: image {img}: {key} has shape '
                    f'{tuple(value.shape)}, the restored prediction {shape}; in '
                    f"the config's `tta_pipeline` load the annotations after the "
                    f'Resize and RandomFlip transforms (they must stay on the '
                    f'original image)')

    def _check_same(self, sample: SegDataSample, img: str, view: int) -> None:
        """Every view must carry the image's own ground truth and give a
        prediction of the same size."""
        if tuple(sample.seg_logits.shape) != tuple(self.stats.mean().shape[2:]):
            raise ValueError(
                f'UncertaintyTTAModel: image {img}: view {view} gives a prediction '
                f'of shape {tuple(sample.seg_logits.shape)}, view 0 '
                f'{tuple(self.stats.mean().shape[2:])}; each must be restored to '
                f'the original image (ori_shape)')
        for key, value in self.ground_truth.items():
            other = sample.get(key)
            same = (isinstance(value, PixelData) and isinstance(other, PixelData)
                    and all(torch.equal(value.get(k), other.get(k))
                            for k in value.keys()))
            if not same:
                raise ValueError(
                    f'UncertaintyTTAModel: image {img}: {key} of view {view} differs '
                    f"from view 0's; in the config's `tta_pipeline` load the "
                    f'annotations after the Resize and RandomFlip transforms, '
                    f'so that every view carries the original ones')

    def merged(self) -> SegDataSample:
        mean = self.stats.mean()[0]
        maps = self.stats.decompose()
        count = self.stats.count
        uncertainty = {name: maps[name] for name in UNCERTAINTY_NAMES}
        uncertainty.update({self.wrapped_prefix + name: total / count
                            for name, total in self.wrapped_sums.items()})
        sample = SegDataSample(metainfo=self.metainfo)
        sample.set_data(dict(
            seg_logits=PixelData(data=_log_prob(mean)),
            # max(0).indices: argmax, first index among ties (as the
            # ensemble's post-processing)
            pred_sem_seg=PixelData(data=mean.max(0, keepdim=True).indices),
            pred_uncertainty=PixelData(**uncertainty)))
        sample.set_data(self.ground_truth)
        return sample
