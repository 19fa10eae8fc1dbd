"""Train M ensemble members from one config, then write the ensemble's config.

    python tools/train_ensemble.py CONFIG --members 3 [--work-dir work_dirs/NAME]
        [--seed 0] [--jobs 1] [--launcher none|pytorch|slurm] [--cfg-options ...]

Member i is trained by tools/train.py with ``randomness.seed = seed + i``
into ``WORK_DIR/member_<i>/`` (default WORK_DIR: ``work_dirs/<config name>_ensemble``).
A finished member is skipped on a second run and an interrupted one resumes
from its last checkpoint. Then ``WORK_DIR/ensemble.py`` is written: the
member config's data and runtime with an ``EnsembleSegmentor`` whose members
are the trained ones, evaluated by mIoU and UncertaintyMetric on every map the
ensemble gives (total, aleatoric, epistemic, std, variation ratio); test it with

    python tools/test.py WORK_DIR/ensemble.py

``--jobs J`` trains J members at once, each process with ``cores // J``
intra-op threads (unless OMP_NUM_THREADS is set), one of the visible GPUs
(round robin) and its output prefixed by ``[member i]``. On a CPU small
networks make poor use of many threads: three one-thread processes on two
cores train about twice as fast as three two-thread runs one after another.
A member that fails stops the others.

Under ``--launcher pytorch`` or ``slurm`` run this script as you would run
tools/train.py (torchrun / srun): every member is trained by all processes
(``--jobs`` must then be 1).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time

TOOLS = osp.dirname(osp.abspath(__file__))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an ensemble of segmentors')
    parser.add_argument('config', help='config of one member')
    parser.add_argument('--members', type=int, default=3, help='M (default 3)')
    parser.add_argument('--work-dir', help='default: work_dirs/<config>_ensemble')
    parser.add_argument('--seed', type=int, default=0,
                        help='member i is trained with seed + i')
    parser.add_argument('--jobs', type=int, default=1,
                        help='members trained at once (default 1)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='overrides for every member, passed to tools/train.py')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.members < 1:
        parser.error(f'--members must be at least 1, got {args.members}')
    if not osp.isfile(args.config):
        parser.error(f'config {args.config} does not exist')
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    if args.jobs > 1 and args.launcher != 'none':
        parser.error('--jobs > 1 trains members side by side in one process '
                     'group; with --launcher every process trains every '
                     'member, so use --jobs 1')
    return args


def final_checkpoint(member_dir: str) -> str | None:
    """The checkpoint a finished member ended with, from ``member.json``."""
    record = osp.join(member_dir, 'member.json')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        return json.load(f)['checkpoint']


def member_command(args: argparse.Namespace, index: int, member_dir: str
                   ) -> list[str]:
    """tools/train.py for member ``index`` (resuming a started one)."""
    command = [sys.executable, osp.join(TOOLS, 'train.py'), args.config,
               '--work-dir', member_dir, '--launcher', args.launcher,
               '--cfg-options', f'randomness.seed={args.seed + index}',
               *args.cfg_options]
    if osp.isfile(osp.join(member_dir, 'last_checkpoint')):
        command.append('--resume')
    return command


def record_member(args: argparse.Namespace, index: int, member_dir: str) -> str:
    """Write ``member.json`` of a finished member; return its checkpoint."""
    with open(osp.join(member_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    with open(osp.join(member_dir, 'member.json'), 'w') as f:
        json.dump(dict(seed=args.seed + index, checkpoint=checkpoint,
                       config=member_config(args.config, member_dir)), f, indent=2)
    return checkpoint


def failure(index: int, returncode: int, member_dir: str) -> SystemExit:
    return SystemExit(f'member {index}: training failed (exit code '
                      f'{returncode}); its log is in {member_dir}')


def train_member(args: argparse.Namespace, index: int, member_dir: str) -> str:
    """Run tools/train.py for member ``index``; return its last checkpoint."""
    result = subprocess.run(member_command(args, index, member_dir))
    if result.returncode != 0:
        raise failure(index, result.returncode, member_dir)
    return record_member(args, index, member_dir)


def _relay(proc: subprocess.Popen, prefix: str, lock: threading.Lock) -> None:
    for line in proc.stdout:
        with lock:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


def visible_gpus() -> list[str]:
    """The GPUs the members may use: CUDA_VISIBLE_DEVICES, else every one."""
    if os.environ.get('CUDA_VISIBLE_DEVICES'):
        return [d for d in os.environ['CUDA_VISIBLE_DEVICES'].split(',') if d.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def job_env(base: dict[str, str], job: int, jobs: int, cores: int,
            gpus: list[str]) -> dict[str, str]:
    """Environment of the ``job``-th of ``jobs`` members trained at once:
    an equal share of the CPU cores as intra-op threads (unless
    OMP_NUM_THREADS is set) and, with GPUs, one of them (round robin)."""
    env = dict(base)
    if 'OMP_NUM_THREADS' not in base:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(max(1, cores // jobs))
    if gpus:
        env['CUDA_VISIBLE_DEVICES'] = gpus[job % len(gpus)]
    return env


def train_members_in_parallel(args: argparse.Namespace,
                              todo: list[tuple[int, str]]) -> None:
    """Train the members of ``todo`` (index, folder), ``args.jobs`` at a time."""
    jobs = min(args.jobs, len(todo))
    gpus = visible_gpus()
    started = 0
    lock = threading.Lock()
    pending, running = list(todo), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                index, member_dir = pending.pop(0)
                os.makedirs(member_dir, exist_ok=True)
                env = job_env(dict(os.environ), started, jobs,
                              os.cpu_count() or 1, gpus)
                started += 1
                proc = subprocess.Popen(
                    member_command(args, index, member_dir), env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                relay = threading.Thread(target=_relay, daemon=True, args=(
                    proc, f'[member {index}] ', lock))
                relay.start()
                running.append((index, member_dir, proc, relay))
            # wait for the first of the running members to end
            while not any(entry[2].poll() is not None for entry in running):
                time.sleep(0.5)
            index, member_dir, proc, relay = next(
                entry for entry in running if entry[2].returncode is not None)
            running.remove((index, member_dir, proc, relay))
            relay.join()
            if proc.returncode != 0:
                raise failure(index, proc.returncode, member_dir)
            record_member(args, index, member_dir)
    finally:
        for _, _, proc, _ in running:
            proc.terminate()
        for _, _, proc, _ in running:
            proc.wait()


def member_config(config: str, member_dir: str) -> str:
    """The config the runner dumped into the member's folder (with the
    member's seed and overrides)."""
    return osp.join(member_dir, osp.basename(config))


def write_ensemble_config(args: argparse.Namespace, work_dir: str,
                          members: list[dict]) -> str:
    from mmseg_uncert.evaluation.metrics.uncertainty_metric import BUILTIN_SCORES
    from mmseg_uncert.models.uncertainty import UNCERTAINTY_NAMES
    # the probability scores and every map of EnsembleSegmentor
    scores = [*BUILTIN_SCORES, *UNCERTAINTY_NAMES]
    path = osp.join(work_dir, 'ensemble.py')
    lines = [
        '# Written by tools/train_ensemble.py: the members trained from',
        f'# {args.config} with seeds {args.seed}..{args.seed + len(members) - 1}.',
        # the first member's full config (with the overrides it was trained
        # with) gives the data, evaluators and runtime
        f"_base_ = [{members[0]['config']!r}]",
        f'work_dir = {work_dir!r}',
        'model = dict(',
        "    _delete_=True,",
        "    type='EnsembleSegmentor',",
        '    members=[',
        *[f"        dict(config={m['config']!r},\n"
          f"             checkpoint={m['checkpoint']!r})," for m in members],
        '    ])',
        "# the member's metrics see one model; the ensemble's maps are added",
        'test_evaluator = [',
        "    dict(type='IoUMetric', iou_metrics=['mIoU']),",
        "    dict(type='UncertaintyMetric',",
        f'         scores={scores!r}),',
        ']',
        'val_evaluator = test_evaluator',
        '',
    ]
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def main() -> None:
    args = parse_args()
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', f'{name}_ensemble')
    os.makedirs(work_dir, exist_ok=True)
    # torchrun sets RANK, srun SLURM_PROCID: one process reports and writes
    rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')))
    member_dirs = [osp.join(work_dir, f'member_{i}') for i in range(args.members)]
    todo = []
    for index, member_dir in enumerate(member_dirs):
        done = final_checkpoint(member_dir) is not None
        if rank == 0:
            state = 'done, skipped' if done else 'training'
            print(f'[ensemble] member {index + 1} of {args.members} '
                  f'({member_dir}): {state}', flush=True)
        if not done:
            todo.append((index, member_dir))
    if args.jobs > 1 and len(todo) > 1:
        train_members_in_parallel(args, todo)
    else:
        for index, member_dir in todo:
            train_member(args, index, member_dir)
    members = [dict(config=osp.abspath(member_config(args.config, member_dir)),
                    checkpoint=osp.abspath(final_checkpoint(member_dir)))
               for member_dir in member_dirs]
    if rank == 0:
        path = write_ensemble_config(args, work_dir, members)
        print(f'[ensemble] {args.members} members trained; test the ensemble '
              f'with: python tools/test.py {path}', flush=True)


if __name__ == '__main__':
    main()
