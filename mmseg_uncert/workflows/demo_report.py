"""The main job's report (``report.md``): tables, goals, sentences and
figures, all from the evaluation files of one run of ``tools/demo.py``.

The report reads, under the demo's work directory,
``eval/<split>/<model>/metrics.json`` (``tools/evaluate_uncertainty.py``),
``eval/<split>/<model>/maps.npz`` (the saved epistemic maps),
``eval/<split>/<model>/reliability_diagram.json`` and
``risk_coverage_<score>.json``, ``eval/timing/timing.json`` (the models'
seconds per image, timed side by side: ``tools/evaluate_uncertainty.py
--time``) and the pictures under ``pictures/<split>/``.
"""
from __future__ import annotations

import datetime
import json
import os
import os.path as osp
from dataclasses import dataclass

import numpy as np
import torch

from .distillation_report import (Goal, ModelSummary, check_goals, comparison_table,
                                  decomposition_table, goals_table, summarise)
from .split_evaluation import map_correlations

SPLITS = ('val', 'ood')
#: (row label, model name in eval/<split>/)
ROWS = (('teacher ensemble (M = 3)', 'ensemble'),
        ('no distillation (member 0)', 'member_0'),
        ('student (one pass)', 'student'))
#: the second teacher's model name in eval/<split>/: TTA of the ensemble
TTA_TEACHER = 'tta_ensemble'
#: the scores drawn in the risk-coverage figure, per model
CURVES = dict(ensemble=('epistemic', 'total'), member_0=('max_prob', ),
              student=('epistemic', 'entropy'), tta_ensemble=('epistemic', 'total'))
#: nats: where the teacher's epistemic map is below it, the student's should be too
EPISTEMIC_FLOOR = 0.005
#: the student's OOD AUROC to reach, and its side-by-side cost against the member
STUDENT_OOD_AUROC = 0.93
STUDENT_COST = 1.15


@dataclass
class DemoRun:
    """What the report says about the run itself."""
    work_dir: str
    counts: dict[str, int]
    member_iters: int
    student_iters: int
    members: int
    eval_images: int
    elapsed: float  # seconds of steps 1-6
    quick: bool = False
    #: the row of the second teacher (TTA of the ensemble), evaluated as
    #: eval/<split>/tta_ensemble; None where the run has none
    tta_teacher: str | None = None
    #: the teacher the student learnt from: 'ensemble' or 'tta_ensemble'
    distilled_from: str = 'ensemble'


def rows_of(run: DemoRun) -> tuple[tuple[str, str], ...]:
    """The report's models: :data:`ROWS`, with the TTA teacher after the
    ensemble where the run has one."""
    if run.tta_teacher is None:
        return ROWS
    return (ROWS[0], (run.tta_teacher, TTA_TEACHER), *ROWS[1:])


def teacher_names(run: DemoRun) -> tuple[str, ...]:
    """The teachers of the run: the ensemble, and TTA of it."""
    return ('ensemble', ) if run.tta_teacher is None else ('ensemble', TTA_TEACHER)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 60}m{seconds % 60:02d}s'


def _metrics(run: DemoRun, split: str, name: str) -> dict:
    with open(osp.join(run.work_dir, 'eval', split, name, 'metrics.json')) as f:
        return json.load(f)


def side_by_side_timing(run: DemoRun) -> dict | None:
    """``eval/timing/timing.json`` (each model's seconds per image, with the
    images and rounds timed), or None where the run has no such file."""
    path = osp.join(run.work_dir, 'eval', 'timing', 'timing.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        timing = json.load(f)
    missing = [name for _, name in rows_of(run) if name not in timing['seconds_per_image']]
    if missing:
        raise KeyError(f'{path} has no timing of {missing} (it times '
                       f'{sorted(timing["seconds_per_image"])}); rerun step 5 of the demo')
    return timing


def epistemic_maps(run: DemoRun, split: str, student: str, reference: str
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The saved epistemic maps (``eval/<split>/<model>/maps.npz``) of two
    models over the same pixels, as float32; None when a file or map is missing."""
    files = [osp.join(run.work_dir, 'eval', split, name, 'maps.npz')
             for name in (student, reference)]
    if not all(osp.isfile(f) for f in files):
        return None
    with np.load(files[0]) as a, np.load(files[1]) as b:
        if 'epistemic' not in a.files or 'epistemic' not in b.files:
            return None
        if list(a['img_paths']) != list(b['img_paths']):
            raise ValueError(f'{files[0]} and {files[1]} hold other images')
        return a['epistemic'].astype(np.float32), b['epistemic'].astype(np.float32)


def epistemic_correlation(run: DemoRun) -> float | None:
    """Pearson correlation of the student's epistemic map with the
    ensemble's over every evaluated pixel of val and ood (None when a map
    file is missing)."""
    pairs = [epistemic_maps(run, split, 'student', 'ensemble') for split in SPLITS]
    if any(pair is None for pair in pairs):
        return None
    return map_correlations(torch.from_numpy(np.concatenate([p[0] for p in pairs])),
                            torch.from_numpy(np.concatenate([p[1] for p in pairs])))['pearson']


def epistemic_floor(run: DemoRun) -> tuple[float, float] | None:
    """The median of the student's epistemic map over the val pixels where
    its teacher's is below :data:`EPISTEMIC_FLOOR`, and the share of val
    pixels that are (None when a map file is missing or no pixel is)."""
    pair = epistemic_maps(run, 'val', 'student', run.distilled_from)
    if pair is None:
        return None
    ours, teachers = pair
    quiet = teachers < EPISTEMIC_FLOOR
    if not quiet.any():
        return None
    return float(np.median(ours[quiet])), float(quiet.mean())


def best_teacher(summaries: dict[str, ModelSummary], teachers: tuple[str, ...],
                 task: str) -> tuple[str, str, float]:
    """The teacher that does ``task`` best: its name, best score and AUROC."""
    return max(((t, *summaries[t].best(task)) for t in teachers), key=lambda x: x[2])


def student_goals(summaries: dict[str, ModelSummary], teachers: tuple[str, ...],
                  floor: tuple[float, float] | None) -> list[Goal]:
    """The student against the best teacher of the run (issue goals of
    the one-pass student): OOD and error detection, calibration, the
    aleatoric map on ambiguous pixels, the epistemic floor, the cost."""
    member, student = summaries['member_0'], summaries['student']
    goals = []
    for task, label, floor_auroc in (('ood', 'OOD', STUDENT_OOD_AUROC),
                                     ('misclassification', 'misclassification', None)):
        t, ts, tv = best_teacher(summaries, teachers, task)
        ss, sv = student.best(task)
        text = f"the student's best {label} AUROC is >= the best teacher's"
        met = sv >= tv
        if floor_auroc is not None:
            text += f' and >= {floor_auroc}'
            met = met and sv >= floor_auroc
        goals.append(Goal(text, f'{sv:.3f} (`{ss}`) vs {tv:.3f} ({summaries[t].name}, '
                                f'`{ts}`)', met))
    goals.append(Goal("the student's ECE is at most the member's",
                      f'{student.ece:.4f} vs {member.ece:.4f}', student.ece <= member.ece))
    ours = student.auroc['ambiguous'].get('aleatoric', float('nan'))
    theirs = summaries['ensemble'].auroc['ambiguous'].get('aleatoric', float('nan'))
    goals.append(Goal("the student's aleatoric map finds ambiguous pixels at least as "
                      "well as the ensemble's",
                      f'AUROC {ours:.3f} vs {theirs:.3f}', ours >= theirs))
    goals.append(Goal(
        f"the student's epistemic map has a median <= {EPISTEMIC_FLOOR} nats on the val "
        f"pixels where the teacher's is < {EPISTEMIC_FLOOR}",
        'not measured' if floor is None else
        f'{floor[0]:.4f} nats over {100 * floor[1]:.1f} % of the val pixels',
        floor is not None and floor[0] <= EPISTEMIC_FLOOR))
    ratio = student.seconds_per_image / member.seconds_per_image
    goals.append(Goal(f"the student's test_step costs <= {STUDENT_COST}x the member's",
                      f'{ratio:.2f}x ({student.seconds_per_image:.4f} vs '
                      f'{member.seconds_per_image:.4f} s per image)', ratio <= STUDENT_COST))
    return goals


def observations(summaries: dict[str, ModelSummary], pearson: float | None,
                 teachers: tuple[str, ...] = ('ensemble', ),
                 floor: tuple[float, float] | None = None) -> list[str]:
    """What this run's numbers say, in sentences."""
    ens, mem, stu = (summaries[name] for _, name in ROWS)
    lines = [
        f'- **Speed:** the student needs {stu.seconds_per_image:.3f} s per image, '
        f'{ens.seconds_per_image / stu.seconds_per_image:.1f}x less than the ensemble '
        f'({ens.seconds_per_image:.3f} s).',
        f'- **Segmentation:** mIoU {stu.miou:.2f} for the student, {mem.miou:.2f} for '
        f'one member trained on labels alone, {ens.miou:.2f} for the ensemble.']
    for task, what in (('misclassification', 'its own errors'), ('ood', 'unknown objects')):
        (es, ev), (ms, mv), (ss, sv) = (m.best(task) for m in (ens, mem, stu))
        if sv > ev:
            versus_ensemble = f'above the ensemble (+{sv - ev:.3f})'
        else:
            versus_ensemble = ('within' if sv >= ev - 0.02 else 'more than') + \
                ' 0.02 of the ensemble'
        lines.append(
            f'- **Finding {what}** (best score, AUROC): ensemble {ev:.3f} (`{es}`), '
            f'member {mv:.3f} (`{ms}`), student {sv:.3f} (`{ss}`): the student is '
            + ('above' if sv > mv else 'not above') + f' the member and {versus_ensemble}.')
    # each of the ensemble's maps against the pixels it should find best
    for pixels, best, other, heading, found in (
            ('ood', 'epistemic', 'aleatoric', '**Decomposition:** on OOD pixels',
             'the unknown objects'),
            ('ambiguous', 'aleatoric', 'epistemic',
             '**Ambiguous pixels** (true label entropy > 0):', 'the ambiguous pixels')):
        a, b = (ens.auroc[pixels].get(name) for name in (best, other))
        if a is not None and b is not None:
            lines.append(f"- {heading} the ensemble's {best} map scores AUROC {a:.3f}, "
                         f'its {other} map {b:.3f}: the {best} map '
                         + ('finds' if a > b else 'does not find') + f' {found} better.')
    if TTA_TEACHER in teachers:
        for task, what in (('misclassification', 'errors'), ('ood', 'unknown objects')):
            t, ts, tv = best_teacher(summaries, teachers, task)
            ss, sv = stu.best(task)
            lines.append(f'- **Against the best teacher on {what}:** '
                         f'{summaries[t].name} {tv:.3f} (`{ts}`), student {sv:.3f} '
                         f'(`{ss}`): ' + ('at or above it.' if sv >= tv else
                                          f'{tv - sv:.3f} below it.'))
    if pearson is not None:
        lines.append(f"- **The student's epistemic map** follows the ensemble's at "
                     f'Pearson {pearson:.3f} over every val and ood pixel.')
    if floor is not None:
        lines.append(f"- **Where the teacher is sure** (epistemic < {EPISTEMIC_FLOOR} nats, "
                     f'{100 * floor[1]:.1f} % of the val pixels) the student\'s epistemic '
                     f'map has a median of {floor[0]:.4f} nats.')
    return lines


def write_demo_report(run: DemoRun) -> str:
    """``report.md`` and its figures; returns the report's path."""
    from ..visualization import plot_reliability_diagrams, plot_risk_coverage_curves
    table_rows = rows_of(run)
    summaries = {name: summarise(label, _metrics(run, 'val', name), _metrics(run, 'ood', name))
                 for label, name in table_rows}
    timing = side_by_side_timing(run)
    if timing is not None:
        # the speed goal from the side-by-side timing, not from each model's
        # own evaluation pass (minutes apart, beside the metrics' work)
        for name, summary in summaries.items():
            summary.seconds_per_image = timing['seconds_per_image'][name]
        timing_note = (f"the models timed side by side, taking turns over "
                       f"{timing['images']} val images, median of {timing['rounds']} "
                       f"rounds (`eval/timing/timing.json`)")
    else:
        timing_note = 'each model timed during its own evaluation'
    pearson = epistemic_correlation(run)
    floor = epistemic_floor(run)
    goals = check_goals(summaries['ensemble'], summaries['member_0'], summaries['student'],
                        pearson, run.members)
    goals += student_goals(summaries, teacher_names(run), floor)
    figures = osp.join(run.work_dir, 'figures')
    os.makedirs(figures, exist_ok=True)
    for split in SPLITS:
        diagrams, curves = {}, {}
        for label, name in table_rows:
            folder = osp.join(run.work_dir, 'eval', split, name)
            with open(osp.join(folder, 'reliability_diagram.json')) as f:
                diagrams[label] = json.load(f)
            for score in CURVES[name]:
                path = osp.join(folder, f'risk_coverage_{score}.json')
                if osp.isfile(path):
                    with open(path) as f:
                        curves[f'{label}, {score}'] = json.load(f)
        plot_reliability_diagrams(diagrams, osp.join(figures, f'reliability_{split}.png'))
        plot_risk_coverage_curves(curves, osp.join(figures, f'risk_coverage_{split}.png'),
                                  title=f'risk-coverage on {split}')
    rows = [summaries[name] for _, name in table_rows]
    met = sum(g.met for g in goals)
    lines = [
        '# mmseg-uncert demo report', '',
        f'Written {datetime.datetime.now():%Y-%m-%d %H:%M} by `tools/demo.py'
        f"{' --quick' if run.quick else ''}`; steps 1–6 took {_clock(run.elapsed)} on "
        f'{os.cpu_count()} CPU cores. Data: the synthetic street benchmark, '
        + ', '.join(f'{c} {s}' for s, c in run.counts.items()) + ' images '
        f'(evaluated on the first {run.eval_images} of val and of ood, every pixel); '
        f'{run.members} Fast-SCNN members of {run.member_iters} iterations from random '
        f'initialisation, and a Fast-SCNN student distilled from the '
        + ('ensemble' if run.distilled_from == 'ensemble' else 'TTA of the ensemble')
        + f' for {run.student_iters} iterations, starting from member 0.', '',
        '## What this run shows', '',
        *observations(summaries, pearson, teacher_names(run), floor), '',
        f'## The goals of the main job ({met} of {len(goals)} met in this run)', '',
        *goals_table(goals), '',
        '## Student against its teachers', '',
        'Each row ranks pixels by its best score for the task (in brackets). '
        'Misclassification AUROC: how well the score separates wrong from right '
        'pixels on val; OOD AUROC: unknown-object pixels from the rest on ood; '
        f's / image: `test_step` on a 256 x 512 image, {timing_note}.', '',
        *comparison_table(rows), '',
        '## total = aleatoric + epistemic', '',
        '`aleatoric` (expected entropy of the members) should find the pixels whose '
        'label is ambiguous; `epistemic` (mutual information) the objects never seen '
        "in training. The student predicts both in its one pass; its `entropy` is "
        "the total uncertainty of its own softmax.", '',
        *decomposition_table(rows), '',
        '## Pictures', '',
        "Each row: the image, its ground truth, the student's prediction and its "
        "epistemic and aleatoric maps, the ensemble's epistemic and aleatoric maps, the "
        'true aleatoric map (label entropy of the generator) and the OOD mask. '
        'Draw them for any model and folder with `tools/visualize_uncertainty.py`.', '']
    for split in SPLITS:
        folder = osp.join(run.work_dir, 'pictures', split)
        lines += [f'### {split}', '']
        for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
            lines += [f'![{split} {name}](pictures/{split}/{name})', '']
    lines += ['## Calibration: reliability diagrams', '']
    lines += [f'![reliability diagrams, {s}](figures/reliability_{s}.png)\n' for s in SPLITS]
    lines += ['## Risk–coverage curves', '',
              'Pixels are rejected most uncertain first; a lower curve means the '
              'uncertainty ranks the errors better.', '']
    lines += [f'![risk-coverage, {s}](figures/risk_coverage_{s}.png)\n' for s in SPLITS]
    lines += ['## Files', '',
              '- metrics of every model and split: `eval/<split>/<model>/metrics.json` '
              "(all of UncertaintyMetric's keys), with each model's reliability diagram "
              'and risk–coverage curves per score;',
              '- the ensemble: `ensemble/ensemble.py` (test it with '
              '`python tools/test.py <work dir>/ensemble/ensemble.py`)'
              + ('' if run.tta_teacher is None else
                 ', TTA of it: `ensemble/tta_ensemble.py`') + ';',
              f'- the student: `student/distill.py` and `student/iter_{run.student_iters}.pth`;',
              '- the logs of every step: `logs/`.', '']
    path = osp.join(run.work_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    with open(osp.join(run.work_dir, 'goals.json'), 'w') as f:
        json.dump(dict(goals=[vars(g) for g in goals], pearson_epistemic=pearson,
                       rows={s.name: vars(s) for s in rows}), f, indent=2)
    return path
