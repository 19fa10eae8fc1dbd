"""The main job on the embedded benchmark, from nothing to a report.

    python tools/demo.py             # about 16 min on 2 CPU cores (work_dirs/demo)
    python tools/demo.py --quick     # about 3.5 min: small data, short schedules

Steps, each one of this package's tools, so that what the demo does is what
a user's commands do:

1. generate the synthetic benchmark (train, val, ood) with
   ``tools/make_synthetic.py``;
2. train a teacher ensemble of M = 3 CPU segmentors with
   ``tools/train_ensemble.py --jobs 3`` (members side by side);
3. evaluate the ensemble, and member 0 alone (the student's architecture
   without distillation), on val and ood with
   ``tools/evaluate_uncertainty.py``: mIoU, calibration, the uncertainty
   decomposition (total / aleatoric / epistemic) against misclassified,
   ambiguous and out-of-distribution pixels;
4. distil the student (a DualHead: segmentation and ``std`` in one pass)
   from the ensemble with ``tools/train.py``;
5. evaluate the student on val and ood, its ``std`` against the ensemble's;
6. draw side-by-side pictures of a few val and ood images with
   ``tools/visualize_uncertainty.py``;
7. write ``<work dir>/report.md``: the comparison table, the decomposition,
   the pictures, reliability diagrams and risk–coverage curves.

Every step prints ``=== step k of 7 ... ===`` with the elapsed time and an
estimate of the time left; its output also goes to ``<work dir>/logs/``.
Rerunning skips finished steps, and an interrupted training resumes from its
last checkpoint. A failed step, or too little free disk space for the next
one, stops the demo with the step and its log named.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER_CONFIG = osp.join(ROOT, 'configs',
                         'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
DISTILL_CONFIG = osp.join(
    ROOT, 'configs', 'distill-ensemble-3x_fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
MEMBERS = 3
SPLITS = ('val', 'ood')


@dataclass
class Plan:
    """What one demo run does: data sizes and schedules."""
    counts: dict[str, int]
    member_iters: int
    student_iters: int
    pictures: int
    eval_images: int  # the first images of val and of ood
    # seconds per unit on 2 CPU cores, for the time-left estimate
    unit_seconds: dict[str, float] = field(default_factory=lambda: dict(
        image=0.02, member_iter=0.37, student_iter=1.1, ensemble_eval=0.7,
        student_eval=0.25, picture=2.0, start=20.0))

    @classmethod
    def full(cls) -> Plan:
        return cls(counts=dict(train=1000, val=200, ood=200), member_iters=300,
                   student_iters=300, pictures=3, eval_images=100)

    @classmethod
    def quick(cls) -> Plan:
        return cls(counts=dict(train=80, val=12, ood=12), member_iters=50,
                   student_iters=50, pictures=2, eval_images=12)

    def estimates(self) -> list[float]:
        """Expected seconds of each step."""
        u = self.unit_seconds
        images = len(SPLITS) * self.eval_images
        return [u['image'] * sum(self.counts.values()) + 5,
                u['member_iter'] * MEMBERS * self.member_iters + u['start'],
                u['ensemble_eval'] * images + u['start'],
                u['student_iter'] * self.student_iters + u['start'],
                u['student_eval'] * images + u['start'] / 2,
                u['picture'] * self.pictures * len(SPLITS) + u['start'],
                5.0]


class DemoError(SystemExit):
    """A step could not run or failed: the message names it and its log."""


class Progress:
    """``=== step k of n ===`` lines with the elapsed time and the time left,
    the estimates scaled by how fast the finished steps ran."""

    def __init__(self, titles: list[str], estimates: list[float]) -> None:
        self.titles, self.estimates = titles, estimates
        self.start = time.time()
        self.measured: dict[int, float] = {}

    @staticmethod
    def clock(seconds: float) -> str:
        seconds = int(round(seconds))
        return f'{seconds // 60}m{seconds % 60:02d}s'

    def time_left(self, k: int) -> float:
        """Seconds left before step ``k`` (1-based) starts, to the end."""
        ran = [i for i in self.measured if self.estimates[i - 1] > 0]
        expected = sum(self.estimates[i - 1] for i in ran)
        ratio = sum(self.measured[i] for i in ran) / expected if expected else 1.0
        ratio = min(max(ratio, 0.5), 3.0)
        return ratio * sum(self.estimates[k - 1:])

    def begin(self, k: int, note: str = '') -> None:
        elapsed = time.time() - self.start
        print(f'\n=== step {k} of {len(self.titles)}: {self.titles[k - 1]}'
              f'{note}  (elapsed {self.clock(elapsed)}, about '
              f'{self.clock(self.time_left(k))} left) ===', flush=True)

    def skip(self, k: int, why: str) -> None:
        print(f'=== step {k} of {len(self.titles)}: {self.titles[k - 1]}: '
              f'{why}, skipped ===', flush=True)
        self.estimates[k - 1] = 0.0

    def end(self, k: int, seconds: float) -> None:
        self.measured[k] = seconds


def ensure_free_space(k: int, n: int, title: str, path: str, need_mb: float) -> None:
    """Stop before step ``k`` when ``path``'s disk has less than ``need_mb``."""
    os.makedirs(path, exist_ok=True)
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < need_mb:
        raise DemoError(
            f'demo: step {k} of {n} ({title}) needs about {need_mb:.0f} MB free '
            f'in {path}, the disk has {free_mb:.0f} MB. Free some space (or give '
            f'--work-dir / --data-root on another disk) and rerun: finished '
            f'steps are skipped.')


def run_command(k: int, n: int, title: str, cmd: list[str], log: str,
                env: dict | None = None) -> None:
    """Run one command of step ``k``, its output to the console and ``log``;
    a non-zero exit stops the demo naming the step and the log."""
    print('$ ' + ' '.join(cmd), flush=True)
    os.makedirs(osp.dirname(log), exist_ok=True)
    try:
        with open(log, 'a') as log_file:
            log_file.write(f'$ {" ".join(cmd)}\n')
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, env=env)
            for line in proc.stdout:
                sys.stdout.write(line)
                log_file.write(line)
            returncode = proc.wait()
    except OSError as error:
        raise DemoError(f'demo: step {k} of {n} ({title}) could not run: '
                        f'{error}; its log is {log}') from error
    if returncode != 0:
        raise DemoError(
            f'demo: step {k} of {n} ({title}) failed with exit code '
            f'{returncode}; its log is {log}. Fix the cause and rerun: '
            f'finished steps are skipped.')


def split_counts(data_root: str) -> dict[str, int]:
    """Complete samples per split of a generated data root: the fewest files
    of any of the four kinds (image, label, aleatoric, OOD mask), as an
    interrupted generation may have written some kinds of a sample only."""
    from mmseg_uncert.datasets.synthetic_streets import FILE_SUFFIXES
    counts = {}
    image_root = osp.join(data_root, 'leftImg8bit')
    for split in sorted(os.listdir(image_root)) if osp.isdir(image_root) else []:
        found = []
        for kind, suffix in FILE_SUFFIXES.items():
            folder = osp.join(data_root, 'leftImg8bit' if kind == 'img' else 'gtFine', split)
            found.append(sum(name.endswith(suffix) for _, _, names in os.walk(folder)
                             for name in names))
        counts[split] = min(found)
    return counts


def generation_plan(data_root: str, needed: dict[str, int]) -> dict[str, int] | None:
    """None when ``data_root`` already holds ``needed`` images per split;
    otherwise the counts to generate: the needed splits and, so that
    regenerating loses nothing, every split already there."""
    have = split_counts(data_root)
    if all(have.get(split, 0) >= n for split, n in needed.items()):
        return None
    plan = dict(have)
    for split, n in needed.items():
        plan[split] = max(n, have.get(split, 0))
    return plan


class Demo:
    """The seven steps, their outputs under ``work_dir`` and their data."""

    def __init__(self, work_dir: str, data_root: str, plan: Plan, quick: bool) -> None:
        self.work_dir, self.data_root = work_dir, data_root
        self.plan, self.quick = plan, quick
        self.py = sys.executable
        self.logs = osp.join(work_dir, 'logs')
        self.ensemble_dir = osp.join(work_dir, 'ensemble')
        self.student_dir = osp.join(work_dir, 'student')
        self.eval_dir = osp.join(work_dir, 'eval')
        self.picture_dir = osp.join(work_dir, 'pictures')
        self.steps = [
            ('generate the synthetic benchmark', self.generate, 0.4 * sum(
                plan.counts.values()) + 50),
            (f'train the teacher ensemble ({MEMBERS} members x '
             f'{plan.member_iters} iterations, side by side)', self.train_ensemble, 200),
            ('evaluate the ensemble (and member 0 alone) on val and ood',
             self.evaluate_ensemble, 150),
            (f'distil the student ({plan.student_iters} iterations)',
             self.distil, 100),
            ('evaluate the student on val and ood', self.evaluate_student, 50),
            ('draw side-by-side pictures', self.draw_pictures, 30),
            ('write the report', self.write_report, 5),
        ]
        self.progress = Progress([s[0] for s in self.steps], plan.estimates())

    # ------------------------------------------------------------ plumbing
    def stamp(self, k: int) -> str:
        return osp.join(self.work_dir, '.steps', f'step_{k}.done')

    def run(self) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        n = len(self.steps)
        for k, (title, action, need_mb) in enumerate(self.steps, 1):
            if osp.exists(self.stamp(k)) and k < n:
                self.progress.skip(k, 'done')
                continue
            # the data goes to the data root, everything else to the work dir
            ensure_free_space(k, n, title, self.data_root if k == 1 else self.work_dir,
                              need_mb)
            self.progress.begin(k)
            start = time.time()
            action(k, n, title)
            self.progress.end(k, time.time() - start)
            os.makedirs(osp.dirname(self.stamp(k)), exist_ok=True)
            with open(self.stamp(k), 'w') as f:
                f.write(f'{time.time() - start:.1f}\n')
        print(f'\ndemo finished in {Progress.clock(time.time() - self.progress.start)} '
              f'(all steps, this run and earlier ones: '
              f'{Progress.clock(self.steps_seconds())}): the report is '
              f'{osp.join(self.work_dir, "report.md")}', flush=True)

    def steps_seconds(self) -> float:
        """The time every finished step took, over all runs (from the stamps)."""
        total = 0.0
        for k in range(1, len(self.steps) + 1):
            if osp.exists(self.stamp(k)):
                with open(self.stamp(k)) as f:
                    total += float(f.read().strip() or 0)
        return total

    def log(self, name: str) -> str:
        return osp.join(self.logs, f'{name}.log')

    def data_options(self) -> list[str]:
        return [f'{loader}.dataset.data_root={self.data_root}'
                for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]

    @staticmethod
    def schedule_options(iters: int) -> list[str]:
        """A shorter run of the 2k-iteration schedule: warm-up, poly decay to
        the end, no validation inside (step 3 and 5 evaluate), checkpoints
        every quarter (an interrupted run loses at most a quarter)."""
        warmup = max(1, min(100, iters // 10))
        return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}',
                f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                f'param_scheduler.1.end={iters}',
                f'default_hooks.checkpoint.interval={max(1, iters // 4)}',
                'default_hooks.logger.interval=10']

    def members(self) -> list[dict]:
        return [json.load(open(osp.join(self.ensemble_dir, f'member_{i}', 'member.json')))
                for i in range(MEMBERS)]

    def student_config(self) -> str:
        return osp.join(self.student_dir, 'distill.py')

    def student_checkpoint(self) -> str:
        return osp.join(self.student_dir, f'iter_{self.plan.student_iters}.pth')

    # --------------------------------------------------------------- steps
    def generate(self, k: int, n: int, title: str) -> None:
        plan = generation_plan(self.data_root, self.plan.counts)
        if plan is None:
            print(f'data in {self.data_root} has every image the demo needs, reused',
                  flush=True)
            return
        kept = sorted(set(plan) - set(self.plan.counts))
        if kept:
            # make_synthetic.py --overwrite replaces the whole data root: the
            # splits the demo does not use are written again (same seed, same files)
            print(f'also regenerating the splits already in {self.data_root}: {kept}',
                  flush=True)
        count_args = [a for split, c in plan.items()
                      for a in (f'--{split.replace("_", "-")}', str(c))]
        run_command(k, n, title, [
            self.py, 'tools/make_synthetic.py', '--out-dir', self.data_root,
            '--splits', ','.join(plan), *count_args, '--overwrite'],
            self.log('1_generate'))

    def train_ensemble(self, k: int, n: int, title: str) -> None:
        run_command(k, n, title, [
            self.py, 'tools/train_ensemble.py', MEMBER_CONFIG, '--members',
            str(MEMBERS), '--jobs', str(MEMBERS), '--work-dir', self.ensemble_dir,
            '--cfg-options', *self.data_options(),
            *self.schedule_options(self.plan.member_iters)],
            self.log('2_ensemble'))

    def evaluate(self, k: int, n: int, title: str, models: list[list[str]],
                 split: str, extra: list[str], log: str) -> None:
        cmd = [self.py, 'tools/evaluate_uncertainty.py', '--out-dir',
               osp.join(self.eval_dir, split), '--split', split, '--data-root',
               self.data_root, '--limit', str(self.plan.eval_images), *extra]
        for model in models:
            cmd += ['--model', *model]
        run_command(k, n, f'{title}: {split}', cmd, log)

    def evaluate_ensemble(self, k: int, n: int, title: str) -> None:
        member = self.members()[0]
        models = [['ensemble', osp.join(self.ensemble_dir, 'ensemble.py')],
                  ['member_0', member['config'], member['checkpoint']]]
        for split in SPLITS:
            # the ensemble's std maps of val are kept for the student's step
            extra = ['--save-maps', 'std', '--reference', 'ensemble'] if split == 'val' else []
            self.evaluate(k, n, title, models, split, extra, self.log(f'3_eval_{split}'))

    def distil(self, k: int, n: int, title: str) -> None:
        os.makedirs(self.student_dir, exist_ok=True)
        teacher = dict(_delete_=True, type='EnsembleSegmentor', members=[
            dict(config=m['config'], checkpoint=m['checkpoint']) for m in self.members()])
        with open(self.student_config(), 'w') as f:
            f.write('# Written by tools/demo.py: the student recipe with the '
                    'ensemble trained in step 2\n'
                    f'_base_ = [{DISTILL_CONFIG!r}]\nmodel = dict(teacher={teacher!r})\n')
        cmd = [self.py, 'tools/train.py', self.student_config(), '--work-dir',
               self.student_dir, '--cfg-options', *self.data_options(),
               *self.schedule_options(self.plan.student_iters)]
        if osp.isfile(osp.join(self.student_dir, 'last_checkpoint')):
            cmd.append('--resume')
        run_command(k, n, title, cmd, self.log('4_distil'))

    def evaluate_student(self, k: int, n: int, title: str) -> None:
        model = [['student', self.student_config(), self.student_checkpoint()]]
        for split in SPLITS:
            extra = (['--reference-maps', osp.join(self.eval_dir, 'val', 'ensemble',
                                                   'maps.npz')]
                     if split == 'val' else [])
            self.evaluate(k, n, title, model, split, extra, self.log(f'5_eval_{split}'))

    def draw_pictures(self, k: int, n: int, title: str) -> None:
        for split in SPLITS:
            run_command(k, n, f'{title}: {split}', [
                self.py, 'tools/visualize_uncertainty.py', self.student_config(),
                self.student_checkpoint(),
                osp.join(self.data_root, 'leftImg8bit', split),
                '--ann-dir', osp.join(self.data_root, 'gtFine', split),
                '--reference', osp.join(self.ensemble_dir, 'ensemble.py'),
                '--name', 'student', '--reference-name', 'ensemble',
                '--limit', str(self.plan.pictures),
                '--out-dir', osp.join(self.picture_dir, split)],
                self.log(f'6_pictures_{split}'))

    def write_report(self, k: int, n: int, title: str) -> None:
        try:
            path = write_report(self, elapsed=self.steps_seconds())
        except (OSError, KeyError, ValueError) as error:
            raise DemoError(f'demo: step {k} of {n} ({title}) failed: {error!r}; '
                            f'the evaluation results are in {self.eval_dir}') from error
        print(f'report written to {path}', flush=True)


# ---------------------------------------------------------------- the report
ROWS = (('teacher ensemble (M = 3)', 'ensemble'),
        ('no distillation (member 0)', 'member_0'),
        ('student (one pass)', 'student'))
DECOMPOSITION = ('total', 'aleatoric', 'epistemic', 'std', 'variation_ratio',
                 'max_prob', 'entropy')
SHORT = dict(ensemble='the ensemble', member_0='member 0', student='the student')
#: the scores drawn in the risk-coverage figure, per model
CURVES = dict(ensemble=('std', 'total'), member_0=('max_prob', ),
              student=('std', 'max_prob'))


def _metrics(demo: Demo, split: str, name: str) -> dict:
    with open(osp.join(demo.eval_dir, split, name, 'metrics.json')) as f:
        return json.load(f)


def _fmt(value, digits: int = 3) -> str:
    return '—' if value is None else f'{value:.{digits}f}'


def comparison_table(demo: Demo) -> list[str]:
    """The student benchmark's columns (benchmarks/distillation.py)."""
    lines = ['| model | mIoU (val) | ECE (val) | score | misclassification AUROC (val) '
             '| OOD AUROC (ood) | s / image | Pearson / Spearman with the '
             "ensemble's std (val) | std < 0.01 |",
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for label, name in ROWS:
        val, ood = _metrics(demo, 'val', name), _metrics(demo, 'ood', name)
        score = 'std' if 'auroc/std' in val else 'max_prob'
        corr = (f"{val['pearson/std']:.3f} / {val['spearman/std']:.3f}"
                if 'pearson/std' in val else '—')
        below = val.get('fraction_below_0_01/std')
        lines.append(
            f"| {label} | {val['mIoU']:.2f} | {val['ECE']:.4f} | {score} | "
            f"{_fmt(val.get(f'auroc/{score}'))} | {_fmt(ood.get(f'ood_auroc/{score}'))} | "
            f"{val['seconds_per_image']:.3f} | {corr} | "
            f"{'—' if below is None else f'{100 * below:.2f} %'} |")
    return lines


def decomposition_table(demo: Demo) -> list[str]:
    val, ood = _metrics(demo, 'val', 'ensemble'), _metrics(demo, 'ood', 'ensemble')
    lines = ['| score | misclassified pixels, AUROC (val) | ambiguous pixels '
             '(true label entropy > 0), AUROC (val) | OOD pixels, AUROC (ood) |',
             '| --- | --- | --- | --- |']
    for score in DECOMPOSITION:
        if f'auroc/{score}' not in val:
            continue
        lines.append(f"| {score} | {_fmt(val.get(f'auroc/{score}'))} | "
                     f"{_fmt(val.get(f'aleatoric_auroc/{score}'))} | "
                     f"{_fmt(ood.get(f'ood_auroc/{score}'))} |")
    return lines


def observations(demo: Demo) -> list[str]:
    """What this run's numbers say, in sentences (they differ run to run)."""
    val = {name: _metrics(demo, 'val', name) for _, name in ROWS}
    ood = {name: _metrics(demo, 'ood', name) for _, name in ROWS}
    ens, mem, stu = val['ensemble'], val['member_0'], val['student']
    lines = [
        f"- **Speed:** the student needs {stu['seconds_per_image']:.3f} s per image, "
        f"{ens['seconds_per_image'] / stu['seconds_per_image']:.1f}x less than the "
        f"ensemble ({ens['seconds_per_image']:.3f} s).",
        f"- **Segmentation:** mIoU {stu['mIoU']:.2f} for the student, "
        f"{mem['mIoU']:.2f} for one member trained on labels alone, "
        f"{ens['mIoU']:.2f} for the ensemble.",
        f"- **The student's `std` against the ensemble's:** misclassification AUROC "
        f"{stu['auroc/std']:.3f} vs {ens['auroc/std']:.3f}, OOD AUROC "
        f"{ood['student']['ood_auroc/std']:.3f} vs {ood['ensemble']['ood_auroc/std']:.3f}, "
        f"per-pixel correlation {stu['pearson/std']:.2f} (Pearson).",
    ]
    best = {}
    for task, key, metrics in (('misclassified pixels', 'auroc/', val),
                               ('OOD pixels', 'ood_auroc/', ood)):
        scored = [(value, f'{SHORT[name]} `{k[len(key):]}`') for name, m in metrics.items()
                  for k, value in m.items() if k.startswith(key)]
        best[task] = max(scored)
    lines.append('- **Best score in this run:** ' + '; '.join(
        f'for {task}, {who} (AUROC {value:.3f})' for task, (value, who) in best.items()) + '.')
    epi = ood['ensemble']['ood_auroc/epistemic']
    ale = ood['ensemble']['ood_auroc/aleatoric']
    lines.append(
        f"- **Decomposition:** on OOD pixels the ensemble's epistemic map scores "
        f"AUROC {epi:.3f}, its aleatoric map {ale:.3f}. "
        + ('Epistemic uncertainty singles out the unknown objects better.' if epi > ale else
           'Here epistemic uncertainty does not single out the unknown objects: '
           'members trained this briefly disagree mostly by seed noise.'))
    return lines


def write_report(demo: Demo, elapsed: float) -> str:
    """``report.md`` and its figures from the evaluation and picture steps."""
    from mmseg_uncert.visualization import (plot_reliability_diagrams,
                                            plot_risk_coverage_curves)
    figures = osp.join(demo.work_dir, 'figures')
    os.makedirs(figures, exist_ok=True)
    for split in SPLITS:
        diagrams, curves = {}, {}
        for label, name in ROWS:
            folder = osp.join(demo.eval_dir, split, name)
            with open(osp.join(folder, 'reliability_diagram.json')) as f:
                diagrams[label] = json.load(f)
            for score in CURVES[name]:
                with open(osp.join(folder, f'risk_coverage_{score}.json')) as f:
                    curves[f'{label}, {score}'] = json.load(f)
        plot_reliability_diagrams(diagrams, osp.join(figures, f'reliability_{split}.png'))
        plot_risk_coverage_curves(curves, osp.join(figures, f'risk_coverage_{split}.png'),
                                  title=f'risk-coverage on {split}')
    plan = demo.plan
    lines = [
        '# mmseg-uncert demo report', '',
        f'Written {datetime.datetime.now():%Y-%m-%d %H:%M} by `tools/demo.py'
        f"{' --quick' if demo.quick else ''}`; steps 1–6 took {Progress.clock(elapsed)} on "
        f'{os.cpu_count()} CPU cores. Data: the synthetic street benchmark, '
        + ', '.join(f'{c} {s}' for s, c in plan.counts.items()) + ' images '
        f'(evaluated on the first {plan.eval_images} of val and of ood); '
        f'{MEMBERS} ensemble members of {plan.member_iters} iterations, a student '
        f'of {plan.student_iters} iterations, all from random initialisation. '
        'These schedules are short, so that the demo fits a laptop CPU: the '
        "numbers show the method's behaviour, not its best accuracy (see the "
        "README's benchmarks for longer schedules).", '',
        '## What this run shows', '', *observations(demo), '',
        '## Student against its teacher ensemble', '',
        "`score` is the uncertainty each row is ranked by: the student's and the "
        "ensemble's `std` (spread of the members' probabilities), the single "
        "member's `max_prob` (it has no other). Misclassification AUROC: how "
        'well the score separates wrong from right pixels; OOD AUROC: '
        'unknown-object pixels from the rest; s / image: the forward pass on a '
        '256 x 512 image.', '',
        *comparison_table(demo), '',
        '## What the ensemble knows: total = aleatoric + epistemic', '',
        '`aleatoric` (expected entropy of the members) should find the pixels '
        'whose label is ambiguous; `epistemic` (mutual information) the '
        'objects never seen in training.', '',
        *decomposition_table(demo), '',
        '## Pictures', '',
        'Each row: the image, its ground truth, the student\'s prediction and '
        "uncertainty (`std`), the ensemble's epistemic and aleatoric maps, the "
        'true aleatoric map (label entropy of the generator) and the OOD mask. '
        'Draw them for any model and folder with `tools/visualize_uncertainty.py`.', '']
    for split in SPLITS:
        folder = osp.join(demo.picture_dir, split)
        lines += [f'### {split}', '']
        for name in sorted(os.listdir(folder)):
            lines += [f'![{split} {name}](pictures/{split}/{name})', '']
    lines += ['## Calibration: reliability diagrams', '']
    for split in SPLITS:
        lines += [f'![reliability diagrams, {split}](figures/reliability_{split}.png)', '']
    lines += ['## Risk–coverage curves', '',
              'Pixels are rejected most uncertain first; a lower curve means the '
              'uncertainty ranks the errors better.', '']
    for split in SPLITS:
        lines += [f'![risk-coverage, {split}](figures/risk_coverage_{split}.png)', '']
    lines += ['## Files', '',
              f'- metrics of every model and split: `eval/<split>/<model>/metrics.json` '
              '(all of UncertaintyMetric\'s keys), with each model\'s own '
              'reliability diagram and risk–coverage curves per score;',
              '- the ensemble: `ensemble/ensemble.py` (test it with '
              '`python tools/test.py work_dirs/demo/ensemble/ensemble.py`);',
              f'- the student: `student/distill.py` and `student/iter_{plan.student_iters}.pth`;',
              '- the logs of every step: `logs/`.', '']
    path = osp.join(demo.work_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='small data (80 train images, 12 val, 12 ood) and '
                        '50-iteration schedules: a few minutes')
    parser.add_argument('--work-dir', help='default: work_dirs/demo '
                        '(work_dirs/demo_quick with --quick)')
    parser.add_argument('--data-root', help='default: data/synthetic_streets '
                        '(data/synthetic_streets_quick with --quick)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    suffix = '_quick' if args.quick else ''
    work_dir = osp.abspath(args.work_dir or osp.join('work_dirs', 'demo' + suffix))
    data_root = osp.abspath(args.data_root or osp.join('data', 'synthetic_streets' + suffix))
    plan = Plan.quick() if args.quick else Plan.full()
    Demo(work_dir, data_root, plan, args.quick).run()


if __name__ == '__main__':
    main()
