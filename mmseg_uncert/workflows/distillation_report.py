"""What a distillation run shows: per model the best uncertainty score for
each task, and the main job's goals, each with its figures and whether it is
met. ``benchmarks/distillation.py`` and ``tools/demo.py`` both report from
here, so that their tables and sentences come from the same numbers."""
from __future__ import annotations

from dataclasses import dataclass, field

#: UncertaintyMetric key prefixes of the three tasks an uncertainty score has
TASKS = {'misclassification': 'auroc/', 'ood': 'ood_auroc/',
         'ambiguous': 'aleatoric_auroc/'}


@dataclass
class ModelSummary:
    """One model's figures on val (mIoU, ECE, errors, ambiguous pixels) and
    ood (unknown objects).

    Attributes:
        name: the model's row name.
        miou, ece: on val.
        seconds_per_image: ``test_step`` alone, on val (see
            :func:`~mmseg_uncert.workflows.split_evaluation.time_test_steps` for a
            side-by-side timing).
        auroc: ``{task: {score: AUROC}}`` for the tasks of :data:`TASKS`.
    """
    name: str
    miou: float
    ece: float
    seconds_per_image: float
    auroc: dict[str, dict[str, float]] = field(default_factory=dict)

    def best(self, task: str) -> tuple[str, float]:
        """The score that ranks ``task`` best, and its AUROC."""
        scores = self.auroc.get(task) or {}
        if not scores:
            raise KeyError(f'{self.name} has no score for {task}')
        name = max(scores, key=scores.get)
        return name, scores[name]


def summarise(name: str, val: dict[str, float], ood: dict[str, float]) -> ModelSummary:
    """A :class:`ModelSummary` from the metric dicts of val and of ood."""
    auroc = {task: {} for task in TASKS}
    for task, prefix in TASKS.items():
        source = ood if task == 'ood' else val
        for key, value in source.items():
            if key.startswith(prefix) and value == value:  # NaN: not measurable
                auroc[task][key[len(prefix):]] = float(value)
    return ModelSummary(name=name, miou=float(val['mIoU']), ece=float(val['ECE']),
                        seconds_per_image=float(val['seconds_per_image']), auroc=auroc)


@dataclass
class Goal:
    """One goal of the main job: what it asks, what was measured, met or not."""
    text: str
    measured: str
    met: bool


def check_goals(ensemble: ModelSummary, member: ModelSummary, student: ModelSummary,
                epistemic_pearson: float | None, members: int) -> list[Goal]:
    """The goals of the main job (the student distils the ensemble; the
    member is one label-trained model of the student's architecture)."""
    goals = []
    for task, label in (('misclassification', 'misclassification'), ('ood', 'OOD')):
        (es, ev), (ms, mv), (ss, sv) = (m.best(task) for m in (ensemble, member, student))
        goals.append(Goal(
            f"the ensemble's best {label} AUROC beats a member's by >= 0.02",
            f'{ev:.3f} (`{es}`) vs {mv:.3f} (`{ms}`): {ev - mv:+.3f}', ev - mv >= 0.02))
        goals.append(Goal(
            f"the student's best {label} AUROC is within 0.02 of the ensemble's "
            f"and above the member's",
            f'{sv:.3f} (`{ss}`) vs {ev:.3f} and {mv:.3f}', sv >= ev - 0.02 and sv > mv))
    ood = ensemble.auroc['ood']
    epi, ale = ood.get('epistemic', float('nan')), ood.get('aleatoric', float('nan'))
    goals.append(Goal("the ensemble's epistemic map finds OOD pixels at AUROC >= 0.90, "
                      'above its aleatoric map',
                      f'epistemic {epi:.3f}, aleatoric {ale:.3f}', epi >= 0.90 and epi > ale))
    amb = ensemble.auroc['ambiguous']
    a_ale, a_epi = amb.get('aleatoric', float('nan')), amb.get('epistemic', float('nan'))
    goals.append(Goal("the ensemble's aleatoric map finds ambiguous pixels better than "
                      'its epistemic map',
                      f'aleatoric {a_ale:.3f}, epistemic {a_epi:.3f}', a_ale > a_epi))
    better = min(ensemble.ece, member.ece)
    goals.append(Goal("the student's ECE is within 0.02 of the better of ensemble and member",
                      f'{student.ece:.4f} vs {better:.4f}', student.ece <= better + 0.02))
    goals.append(Goal("the student's epistemic map correlates with the ensemble's at "
                      'Pearson >= 0.8 (val + ood)',
                      'not measured' if epistemic_pearson is None else f'{epistemic_pearson:.3f}',
                      epistemic_pearson is not None and epistemic_pearson >= 0.8))
    goals.append(Goal("the student's mIoU is at least a member's",
                      f'{student.miou:.2f} vs {member.miou:.2f}', student.miou >= member.miou))
    speedup = ensemble.seconds_per_image / student.seconds_per_image
    goals.append(Goal(f'the student is at least {members}x faster than the ensemble',
                      f'{speedup:.2f}x ({student.seconds_per_image:.3f} vs '
                      f'{ensemble.seconds_per_image:.3f} s per image)', speedup >= members))
    return goals


def _fmt(value: float | None, digits: int = 3) -> str:
    return '—' if value is None or value != value else f'{value:.{digits}f}'


def comparison_table(rows: list[ModelSummary]) -> list[str]:
    """Markdown: per model mIoU, ECE, the best score per task, speed."""
    lines = ['| model | mIoU (val) | ECE (val) | best misclassification AUROC (val) '
             '| best OOD AUROC (ood) | s / image |', '| --- | --- | --- | --- | --- | --- |']
    for m in rows:
        (ms, mv), (os_, ov) = m.best('misclassification'), m.best('ood')
        lines.append(f'| {m.name} | {m.miou:.2f} | {m.ece:.4f} | {mv:.3f} (`{ms}`) | '
                     f'{ov:.3f} (`{os_}`) | {m.seconds_per_image:.3f} |')
    return lines


def decomposition_table(rows: list[ModelSummary],
                        scores: tuple[str, ...] = ('total', 'entropy', 'aleatoric',
                                                   'epistemic', 'std', 'max_prob')
                        ) -> list[str]:
    """Markdown: each model's scores against the three tasks."""
    columns = dict(misclassification='misclassified pixels (val)',
                   ambiguous='ambiguous pixels (val)', ood='OOD pixels (ood)')
    lines = ['| model | score | ' + ' | '.join(columns.values()) + ' |',
             '| --- | --- | --- | --- | --- |']
    for m in rows:
        for score in scores:
            if score not in m.auroc['misclassification']:
                continue
            lines.append(f"| {m.name} | `{score}` | "
                         + ' | '.join(_fmt(m.auroc[t].get(score)) for t in columns) + ' |')
    return lines


def goals_table(goals: list[Goal]) -> list[str]:
    lines = ['| goal | measured | met |', '| --- | --- | --- |']
    lines += [f'| {g.text} | {g.measured} | {"yes" if g.met else "**no**"} |' for g in goals]
    return lines


def benchmark_tables(result: dict, recipe: str = 'student decomposition') -> list[str]:
    """Markdown tables of a ``benchmarks/distillation.py`` results file (its
    JSON, as a dict), for docs/benchmarks.md: every model side by side, the recipe's
    goals, its spread over seeds where it was trained with several, and the
    forum baseline's predictions over training where it was run."""
    lines = ['| model | mIoU | ECE | best misclass. AUROC | best OOD AUROC '
             '| OOD AUROC: epistemic / aleatoric | ambiguous AUROC: aleatoric / epistemic '
             '| Pearson (epistemic) | s / image |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, row in result['rows'].items():
        (ms, mv), (os_, ov) = row['best_misclassification'], row['best_ood']
        ood, amb = row['auroc']['ood'], row['auroc']['ambiguous']
        pearson = row.get('epistemic_vs_ensemble', {}).get('pearson')
        lines.append(
            f"| {name} | {row['mIoU']:.2f} | {row['ECE']:.4f} | {mv:.3f} (`{ms}`) "
            f"| {ov:.3f} (`{os_}`) | {_fmt(ood.get('epistemic'))} / {_fmt(ood.get('aleatoric'))} "
            f"| {_fmt(amb.get('aleatoric'))} / {_fmt(amb.get('epistemic'))} | {_fmt(pearson)} "
            f"| {row['seconds_per_image']:.3f} |")
    goals = [Goal(**g) for g in result['goals'][recipe]]
    lines += ['', f'The main job\'s goals for the recipe\'s student (`{recipe}`), as '
              f'`check_goals` judges them ({sum(g.met for g in goals)} of {len(goals)} met):',
              '', *goals_table(goals)]
    spread = result.get('recipe_over_seeds')
    if spread:
        lines += ['', f"The recipe over {len(spread['students'])} student seeds "
                  f"({', '.join(spread['students'])}); goals met per seed: "
                  f"{', '.join(str(n) for n in spread['goals_met'])}:", '',
                  '| figure | mean ± std | per seed |', '| --- | --- | --- |']
        for key, value in spread.items():
            if isinstance(value, dict):
                digits = 2 if key == 'mIoU' else 4 if key == 'ECE' else 3
                lines.append(f"| {key} | {value['mean']:.{digits}f} ± {value['std']:.{digits}f} "
                             f"| {' · '.join(f'{v:.{digits}f}' for v in value['values'])} |")
    collapse = result.get('forum_collapse')
    if collapse:
        teacher = collapse['teacher']
        lines += ['', "The forum baseline's per-class predictions over training (the forum "
                  "thread the product grew from: one sigmoid channel per class regressing that "
                  "class's spread across the members, MSE averaged over every channel and pixel; "
                  "same student start and schedule, no patches; on the first val images at every "
                  "fifth of the schedule); the teacher's "
                  f"per-class spread on the same pixels has mean {teacher['mean']:.4f}, "
                  f"{100 * teacher['fraction_below_0_01']:.1f} % of it below 0.01:", '',
                  '| iteration | mean prediction | fraction below 0.01 |', '| --- | --- | --- |']
        lines += [f"| {p['iteration']} | {p['mean']:.4f} | {100 * p['fraction_below_0_01']:.2f} % |"
                  for p in collapse['student']]
    return lines
