"""The main job on the embedded benchmark, from nothing to a report.

    python tools/demo.py             # about 18 min on 2 CPU cores (work_dirs/demo)
    python tools/demo.py --quick     # a smoke run: small data, 20-iteration schedules

Steps, each one of this package's tools, so that what the demo does is what
a user's commands do:

1. generate the synthetic benchmark (train, val, ood) with
   ``tools/make_synthetic.py``;
2. train a teacher ensemble of M = 3 Fast-SCNN segmentors with
   ``tools/train_ensemble.py --jobs 3`` (members side by side, seeds 0..2,
   each on its own bootstrap sample of the train split);
3. evaluate the teachers, the ensemble and TTA of it (every member on the
   image and its mirror image: 6 passes), and member 0 alone (the student's
   architecture without distillation), on val and ood with
   ``tools/evaluate_uncertainty.py``: mIoU, calibration, the uncertainty
   decomposition (total / aleatoric / epistemic) against misclassified,
   ambiguous and out-of-distribution pixels;
4. distil the student (a Fast-SCNN with a DualHead: segmentation,
   ``epistemic`` and ``aleatoric`` in one pass), starting from member 0,
   from the ensemble (``DISTIL_FROM``) with ``tools/train.py``;
5. evaluate the student on val and ood, keeping its epistemic maps, and
   time the two teachers, member 0 and the student side by side (their
   ``test_step`` on the first 20 val images, taking turns, median of 3
   rounds: ``tools/evaluate_uncertainty.py --time 20 --time-only``);
6. draw side-by-side pictures of a few val and ood images with
   ``tools/visualize_uncertainty.py``;
7. write ``<work dir>/report.md``
   (:mod:`mmseg_uncert.workflows.demo_report`): the main job's goals met or
   not, the comparison table, the decomposition, the pictures, reliability
   diagrams and risk–coverage curves, every sentence from the run's numbers.

Every step prints ``=== step k of 7 ... ===`` with the elapsed time and an
estimate of the time left; its output also goes to ``<work dir>/logs/``.
Rerunning skips finished steps, and an interrupted training resumes from its
last checkpoint. A failed step, or too little free disk space for the next
one, stops the demo with the step and its log named.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER_CONFIG = osp.join(ROOT, 'configs', 'fastscnn',
                         'fast-scnn_1xb4-1k_synthetic-128x256.py')
DISTILL_CONFIG = osp.join(
    ROOT, 'configs', 'distill',
    'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py')
MEMBERS = 3
#: bagging (``BootstrapSampler``): the members' disagreement finds unknown
#: objects better than with seeds alone (benchmarks/results/member_diversity.json)
MEMBER_DIVERSITY = ['train_dataloader.sampler.type=BootstrapSampler']
#: the second teacher the report measures the student against: every member
#: of the ensemble on the image and its mirror image (TTASegmentor with
#: members), M x V = 3 x 2 passes (benchmarks/results/teacher_views.json)
TTA_VIEWS = dict(scales=(1.0, ), flips=(False, True))
#: the teacher the student learns from: 'ensemble' or 'tta_ensemble'
DISTIL_FROM = 'ensemble'
SPLITS = ('val', 'ood')
#: the speed pass of step 5: the first val images, the models taking turns
TIMING_IMAGES = 20


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
        image=0.035, member_iter=0.17, student_iter=0.95, ensemble_eval=0.9,
        student_eval=0.2, timing=1.0, picture=2.5, start=20.0))

    @classmethod
    def full(cls) -> Plan:
        # the recipes' schedules: members of 1000 iterations reach val mIoU
        # >= 75; the student distils for 500, starting from member 0
        return cls(counts=dict(train=1000, val=200, ood=200), member_iters=1000,
                   student_iters=500, pictures=3, eval_images=200)

    @classmethod
    def quick(cls) -> Plan:
        return cls(counts=dict(train=40, val=6, ood=6), member_iters=20,
                   student_iters=20, pictures=2, eval_images=6)

    def estimates(self) -> list[float]:
        """Expected seconds of each step."""
        u = self.unit_seconds
        images = len(SPLITS) * self.eval_images
        return [u['image'] * sum(self.counts.values()) + 5,
                u['member_iter'] * MEMBERS * self.member_iters + u['start'],
                u['ensemble_eval'] * images + u['start'],
                u['student_iter'] * self.student_iters + u['start'],
                u['student_eval'] * images + u['start'] / 2
                + u['timing'] * min(TIMING_IMAGES, self.eval_images) + u['start'],
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


def pinned_env(threads: int) -> dict:
    """The environment with ``threads`` intra-op threads. The demo fixes
    them (members 1 each, everything else 2), whatever the machine's cores:
    float sums in another order round differently, so the same thread counts
    are what let two machines give the same numbers."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def run_command(k: int, n: int, title: str, cmd: list[str], log: str,
                env: dict | None = None) -> None:
    """Run one command of step ``k``, its output to the console and ``log``,
    with 2 intra-op threads unless ``env`` says otherwise; a non-zero exit
    stops the demo naming the step and the log."""
    env = env or pinned_env(2)
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
    """None when ``data_root`` already holds ``needed`` images per split,
    written by this generator version; otherwise the counts to generate: the
    needed splits and, so that regenerating loses nothing, every split
    already there."""
    from mmseg_uncert.datasets.synthetic_streets import (GENERATOR_VERSION,
                                                         generator_version)
    have = split_counts(data_root)
    current = generator_version(data_root) == GENERATOR_VERSION
    if current and all(have.get(split, 0) >= n for split, n in needed.items()):
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
        self.timing_dir = osp.join(self.eval_dir, 'timing')
        self.picture_dir = osp.join(work_dir, 'pictures')
        self.steps = [
            ('generate the synthetic benchmark', self.generate, 0.4 * sum(
                plan.counts.values()) + 50),
            (f'train the teacher ensemble ({MEMBERS} members x '
             f'{plan.member_iters} iterations, side by side)', self.train_ensemble, 200),
            ('evaluate the teachers (the ensemble, TTA of it) and member 0 on val and ood',
             self.evaluate_ensemble, 150),
            (f'distil the student ({plan.student_iters} iterations)',
             self.distil, 100),
            ('evaluate the student on val and ood, and time the four models',
             self.evaluate_student, 50),
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
        """The recipe's schedule at ``iters`` iterations: warm-up, poly decay
        to the end, no validation (steps 3 and 5 evaluate; mmengine would
        otherwise validate after the last iteration), checkpoints every
        quarter (an interrupted run loses at most a quarter)."""
        warmup = max(1, min(100, iters // 10))
        return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}',
                'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
                f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                f'param_scheduler.1.end={iters}',
                f'default_hooks.checkpoint.interval={max(1, iters // 4)}',
                'default_hooks.logger.interval=10']

    def members(self) -> list[dict]:
        return [json.load(open(osp.join(self.ensemble_dir, f'member_{i}', 'member.json')))
                for i in range(MEMBERS)]

    def tta_config(self) -> str:
        """The TTA-of-the-ensemble teacher's config, ``ensemble/tta_ensemble.py``."""
        return osp.join(self.ensemble_dir, 'tta_ensemble.py')

    def teacher_model(self, name: str) -> dict:
        """The model config of teacher ``name`` ('ensemble' or 'tta_ensemble')."""
        members = [dict(config=m['config'], checkpoint=m['checkpoint'])
                   for m in self.members()]
        if name == 'ensemble':
            return dict(type='EnsembleSegmentor', members=members)
        return dict(type='TTASegmentor', members=members, **TTA_VIEWS)

    @staticmethod
    def tta_label() -> str:
        """The TTA teacher's row in the report."""
        views = len(TTA_VIEWS['scales']) * len(TTA_VIEWS['flips'])
        return f'teacher TTA of the ensemble (M x V = {MEMBERS} x {views})'

    def write_tta_config(self) -> None:
        """``ensemble/tta_ensemble.py``: the ensemble's config with the TTA
        teacher as its model, for tools/test.py and the evaluation."""
        from mmengine.config import Config
        cfg = Config.fromfile(osp.join(self.ensemble_dir, 'ensemble.py'))
        cfg.model = self.teacher_model('tta_ensemble')
        cfg.dump(self.tta_config())

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
            *self.schedule_options(self.plan.member_iters), *MEMBER_DIVERSITY],
            self.log('2_ensemble'), env=pinned_env(1))

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
        self.write_tta_config()
        models.append(['tta_ensemble', self.tta_config()])
        for split in SPLITS:
            # the teachers' epistemic maps are kept: the report correlates
            # the student's with the ensemble's over val and ood, and
            # measures its floor where its teacher's is near 0
            self.evaluate(k, n, title, models, split, ['--save-maps', 'epistemic'],
                          self.log(f'3_eval_{split}'))

    def distil(self, k: int, n: int, title: str) -> None:
        os.makedirs(self.student_dir, exist_ok=True)
        from mmengine.config import Config
        cfg = Config.fromfile(DISTILL_CONFIG)
        # the student recipe with the ensemble trained in step 2
        cfg.model.teacher = self.teacher_model(DISTIL_FROM)
        cfg.model.student_init = self.members()[0]['checkpoint']
        cfg.dump(self.student_config())
        cmd = [self.py, 'tools/train.py', self.student_config(), '--work-dir',
               self.student_dir, '--cfg-options', *self.data_options(),
               *self.schedule_options(self.plan.student_iters)]
        if osp.isfile(osp.join(self.student_dir, 'last_checkpoint')):
            cmd.append('--resume')
        run_command(k, n, title, cmd, self.log('4_distil'))

    def evaluate_student(self, k: int, n: int, title: str) -> None:
        student = ['student', self.student_config(), self.student_checkpoint()]
        for split in SPLITS:
            self.evaluate(k, n, title, [student], split, ['--save-maps', 'epistemic'],
                          self.log(f'5_eval_{split}'))
        # the speed goal compares the three models timed side by side, taking
        # turns: each one timed during its own evaluation, minutes apart,
        # carries whatever else the machine did then (a 3.8x ratio measured
        # as 2.95x so on 2026-12-01)
        member = self.members()[0]
        cmd = [self.py, 'tools/evaluate_uncertainty.py', '--out-dir', self.timing_dir,
               '--split', 'val', '--data-root', self.data_root,
               '--time', str(min(TIMING_IMAGES, self.plan.eval_images)), '--time-only',
               '--model', 'ensemble', osp.join(self.ensemble_dir, 'ensemble.py'),
               '--model', 'member_0', member['config'], member['checkpoint'],
               '--model', *student]
        cmd += ['--model', 'tta_ensemble', self.tta_config()]
        run_command(k, n, f'{title}: speed', cmd, self.log('5_timing'))

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
        from mmseg_uncert.workflows.demo_report import DemoRun, write_demo_report
        run = DemoRun(work_dir=self.work_dir, counts=self.plan.counts,
                      member_iters=self.plan.member_iters,
                      student_iters=self.plan.student_iters, members=MEMBERS,
                      eval_images=self.plan.eval_images,
                      elapsed=self.steps_seconds(), quick=self.quick,
                      tta_teacher=self.tta_label(), distilled_from=DISTIL_FROM)
        try:
            path = write_demo_report(run)
        except (OSError, KeyError, ValueError) as error:
            raise DemoError(f'demo: step {k} of {n} ({title}) failed: {error!r}; '
                            f'the evaluation results are in {self.eval_dir}') from error
        print(f'report written to {path}', flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='small data (40 train images, 6 val, 6 ood) and '
                        '20-iteration schedules: a few minutes')
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
