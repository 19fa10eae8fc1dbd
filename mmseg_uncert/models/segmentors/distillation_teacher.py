"""A distillation teacher: built frozen, run one member at a time, its outputs
checked, for :class:`~.ensemble_distiller.EnsembleDistiller`."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..decode_heads.head_taps import HeadTap, tap_head
from ..losses.pairwise_kd_loss import affinity
from ..precision import at_least_float32
from ..strong_view import StrongView
from ..uncertainty import UNCERTAINTY_NAMES, PredictiveStatistics
from .cascade import final_head
from .ensemble_segmentor import normalisation_of
from .members import mmseg_scope
from .predictive_segmentor import PredictiveSegmentor
from .tta_segmentor import TTASegmentor

#: teacher maps ``class_std/<c>``: the members' spread of class c's probability
CLASS_STD = 'class_std'


class TeacherOutputs(NamedTuple):
    """What the student learns from, accumulated over the members.

    prob: the members' mean probabilities, at the KD temperature (B, C, h, w).
    maps: the uncertainty maps by name (:data:`UNCERTAINTY_NAMES`, and
        ``class_std/<c>`` when asked for), (B, h, w) each.
    mean_log_prob: the members' mean log-probability (EnD²), or None.
    affinity: the members' mean feature affinity on ``grid``, or None.
    grid: the pair-wise nodes' grid, from the first member's features.
    feature: the members' mean feature map (feature mimic), or None.
    """

    prob: Tensor
    maps: dict[str, Tensor]
    mean_log_prob: Tensor | None = None
    affinity: Tensor | None = None
    grid: tuple[int, int] | None = None
    feature: Tensor | None = None


def build_teacher(teacher: Any, num_classes: int | None = None,
                  data_preprocessor: dict | None = None) -> PredictiveSegmentor:
    """The teacher from an EnsembleSegmentor, MCDropoutSegmentor or
    TTASegmentor config, a list of member specs (an ensemble), or one member
    spec (an ensemble of one); checked against the student's ``num_classes``
    and input normalisation (``data_preprocessor``) when given."""
    if isinstance(teacher, (list, tuple)):
        teacher = dict(type='EnsembleSegmentor', members=list(teacher))
    elif isinstance(teacher, str) or 'type' not in teacher:
        teacher = dict(type='EnsembleSegmentor', members=[teacher])
    try:
        with mmseg_scope():
            model = MODELS.build(teacher)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f'EnsembleDistiller teacher: {error}. To run the trained student '
            f'alone, without its teacher, build the model with '
            f'model.train_cfg=None (mmseg.apis.init_model does) or use '
            f'mmseg_uncert.apis.init_uncertainty_model / '
            f'UncertaintyInferencer') from error
    if not isinstance(model, PredictiveSegmentor):
        raise TypeError(f'EnsembleDistiller: the teacher must be an '
                        f'EnsembleSegmentor, MCDropoutSegmentor or TTASegmentor '
                        f'(or member specs), got {type(model).__name__}; for '
                        f'test-time augmentation of a training batch use '
                        f'TTASegmentor (UncertaintyTTAModel is the wrapper of '
                        f'tools/test.py --tta, on pipeline views)')
    if getattr(model, 'stream_members', False):
        raise ValueError('EnsembleDistiller: the teacher has stream_members=True, '
                         'which builds and loads every member for each pass: each '
                         'training step, and its members could be neither frozen '
                         'nor tapped; set stream_members=False')
    if num_classes is not None and model.num_classes != num_classes:
        infos = getattr(model, 'member_info', None) or [getattr(model, 'info', {})]
        sources = ', '.join(str(i.get('source')) for i in infos)
        raise ValueError(
            f'EnsembleDistiller: the teacher predicts {model.num_classes} '
            f'classes ({sources}), the student {num_classes}; they must agree')
    ours = normalisation_of(data_preprocessor)
    theirs = normalisation_of(model.data_preprocessor_cfg)
    if ours and theirs and ours != theirs:
        raise ValueError(
            f'EnsembleDistiller: the student normalises inputs with {ours}, '
            f'the teacher with {theirs}; both read the same tensor')
    return model


def check_targets(targets: dict[str, str], num_classes: int) -> None:
    """Every uncertainty channel's target must be a map the teacher gives."""
    per_class = {f'{CLASS_STD}/{c}' for c in range(num_classes)}
    unknown = sorted(set(targets.values()) - set(UNCERTAINTY_NAMES) - per_class)
    if unknown:
        raise ValueError(f'EnsembleDistiller: no teacher map named {unknown}; '
                         f'the teacher gives {list(UNCERTAINTY_NAMES)} and the '
                         f'per-class spread {CLASS_STD}/0 .. {CLASS_STD}/'
                         f'{num_classes - 1} (set uncertainty_targets to map '
                         f'channels to them)')


def feature_taps(teacher: PredictiveSegmentor) -> list[HeadTap]:
    """Taps on the final heads of the segmentors inside a teacher (ensemble
    members, or the MC or TTA model), for the feature terms."""
    if isinstance(teacher, TTASegmentor) and any(teacher.flips):
        # a flipped view's features are mirrored: they would be compared with
        # the student's at the wrong places (rescaled views are fine: both
        # terms pool or resize the features to the student's grid)
        raise ValueError('EnsembleDistiller: pair-wise KD and feature mimic read '
                         'the teacher\'s features, and a TTASegmentor teacher\'s '
                         'flipped views give mirrored ones; use flips=(False,) '
                         'with scales only, or drop pairwise_loss and mimic_loss')
    if isinstance(teacher, TTASegmentor):
        # views outer, models inner: the k-th map is model k mod M's
        models = teacher.view_models
    else:
        models = list(teacher.members) if hasattr(teacher, 'members') else [teacher.model]
    if any((m.test_cfg or {}).get('mode', 'whole') != 'whole' for m in models):
        raise ValueError('EnsembleDistiller: pair-wise KD and feature mimic need the '
                         "teacher in whole-image inference (test_cfg mode='whole')")
    return [tap_head(final_head(m), 'EnsembleDistiller teacher') for m in models]


@torch.no_grad()
def teacher_outputs(teacher: PredictiveSegmentor, inputs: Tensor, metas: list[dict], *,
                    temperature: float = 1.0,
                    half: bool = False,
                    taps: Sequence[HeadTap] = (),
                    pairwise_grid: Callable[[Tensor], tuple[int, int]] | None = None,
                    mean_feature: bool = False,
                    log_prob: Callable[[Tensor], Tensor] | None = None,
                    class_std: bool = False,
                    checked: Sequence[str] = ()) -> TeacherOutputs:
    """Run the teacher one member at a time under ``no_grad`` and accumulate
    its outputs streaming (see :class:`TeacherOutputs`).

    Args:
        temperature: T of the KD probabilities, softmax(log p / T) per member.
        half: run under autocast (the device's default half type), even when
            the caller does not; otherwise the caller's autocast applies.
        taps: :func:`feature_taps` of the teacher, for the feature terms.
        pairwise_grid: the pair-wise grid of a feature map (affinities
            accumulate on the first member's grid), or None.
        mean_feature: accumulate the members' features (feature mimic),
            resized to the first member's grid.
        log_prob: a member's log-probability for EnD² (the DirichletHead's
            ``loss_distribution.log_prob``), or None.
        class_std: add the ``class_std/<c>`` maps.
        checked: the maps that must be finite besides ``prob`` (a NaN or
            infinite value stops with an error naming the image).
    """
    stats = PredictiveStatistics()
    tempered = affinity_sum = feature_sum = log_prob_sum = grid = None
    count = 0
    autocast = torch.autocast(inputs.device.type) if half else contextlib.nullcontext()
    with autocast, contextlib.ExitStack() as recording:
        for tap in taps:
            recording.enter_context(tap)
        for prob in teacher.member_probabilities(inputs, metas):
            prob = at_least_float32(prob)
            stats.add(prob)
            count += 1
            if temperature != 1.0:
                q = (prob.clamp_min(1e-38).log() / temperature).softmax(1)
                tempered = q if tempered is None else tempered.add_(q)
            if log_prob is not None:
                # EnD² needs the members only through their mean log-probability
                lp = log_prob(prob)
                log_prob_sum = lp if log_prob_sum is None else log_prob_sum.add_(lp)
            if not taps:
                continue
            # the member that just ran recorded its features (an MC dropout
            # teacher: its one model, every pass)
            feature, _ = taps[(count - 1) % len(taps)].take(image_size=inputs.shape[2:])
            feature = at_least_float32(feature)
            if pairwise_grid is not None:
                grid = grid or pairwise_grid(feature)
                a = affinity(feature, grid)
                affinity_sum = a if affinity_sum is None else affinity_sum.add_(a)
            if mean_feature:
                if feature_sum is not None and feature.shape != feature_sum.shape:
                    # members of other architectures: the first's grid
                    feature = resize(feature, feature_sum.shape[2:], mode='bilinear',
                                     align_corners=False)
                feature_sum = (feature.clone() if feature_sum is None
                               else feature_sum.add_(feature))
    maps = stats.decompose()
    if class_std:
        for c, spread in enumerate(stats.class_std().unbind(1)):
            maps[f'{CLASS_STD}/{c}'] = spread
    prob = stats.mean() if tempered is None else tempered / count
    check_finite(dict(prob=prob, **{name: maps[name] for name in checked}), metas)
    return TeacherOutputs(
        prob=prob, maps=maps, grid=grid,
        mean_log_prob=None if log_prob_sum is None else log_prob_sum / count,
        affinity=None if affinity_sum is None else affinity_sum / count,
        feature=None if feature_sum is None else feature_sum / count)


def check_finite(outputs: dict[str, Tensor], metas: list[dict]) -> None:
    """A NaN or infinite teacher output would silently poison the student:
    stop, naming the image and the map. One host sync for all of them."""
    bad = torch.stack([~torch.isfinite(v.flatten(1)).all(1) for v in outputs.values()])
    if bool(bad.any()):
        m, i = (int(k) for k in bad.nonzero()[0])
        raise FloatingPointError(
            f'EnsembleDistiller: the teacher\'s {list(outputs)[m]!r} map is NaN or '
            f'infinite on image {metas[i].get("img_path", f"#{i} of the batch")}; '
            f'check the teacher checkpoints (and, with teacher_autocast, '
            f'overflow in half precision)')


@torch.no_grad()
def carried_to_view(teacher: TeacherOutputs, view: StrongView) -> TeacherOutputs:
    """The teacher's probabilities and maps on the weak view carried to a
    strong view of it (ProDA's distillation: the student learns on the
    strong view what the teacher says of the weak one), 0 where the strong
    pixel has no content (outside the weak view, cut out), where
    :class:`EnsembleDistiller` therefore puts no label."""
    def carry(t: Tensor) -> Tensor:  # (B, C, h, w)
        return view.follow(t) * view.inside(t.shape[2:])[:, None]
    return teacher._replace(
        prob=carry(teacher.prob),
        maps={name: carry(m[:, None])[:, 0] for name, m in teacher.maps.items()},
        mean_log_prob=(None if teacher.mean_log_prob is None
                       else carry(teacher.mean_log_prob)))
