"""tools/demo.py: the README's main command, end to end in its quick mode,
its resume, its progress estimate and its errors."""
from __future__ import annotations

import importlib.util
import json
import os
import os.path as osp
import re
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

from conftest import ROOT, tool_env


@pytest.fixture(scope='module')
def demo_module():
    spec = importlib.util.spec_from_file_location('demo', osp.join(ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules['demo'] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules['demo']


def _run_demo(work: str, data: str) -> subprocess.CompletedProcess:
    env = tool_env()
    env.pop('OMP_NUM_THREADS')  # as a user runs it: every core
    return subprocess.run(
        [sys.executable, 'tools/demo.py', '--quick', '--work-dir', work,
         '--data-root', data], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900)


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    base = tmp_path_factory.mktemp('demo')
    work, data = str(base / 'work'), str(base / 'data')
    proc = _run_demo(work, data)
    if proc.returncode != 0:
        pytest.fail(f'demo failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}')
    return dict(work=work, data=data, out=proc.stdout)


def test_quick_demo_reports_every_step(quick_demo):
    out = quick_demo['out']
    for k in range(1, 8):
        assert re.search(rf'=== step {k} of 7: .*\(elapsed \d+m\d\ds, about '
                         rf'\d+m\d\ds left\) ===', out), k
    # mmengine's own logs come through, the members' with their prefix
    assert '[member 2] ' in out and 'Iter(train) [20/20]' in out


def test_quick_demo_report_holds_the_evaluated_numbers(quick_demo):
    work = quick_demo['work']
    report = open(osp.join(work, 'report.md')).read()
    for split in ('val', 'ood'):
        for name in ('ensemble', 'tta_ensemble', 'member_0', 'student'):
            metrics = json.load(open(osp.join(work, 'eval', split, name, 'metrics.json')))
            assert metrics['images'] == 6
    val = {name: json.load(open(osp.join(work, 'eval', 'val', name, 'metrics.json')))
           for name in ('ensemble', 'tta_ensemble', 'member_0', 'student')}
    ood = {name: json.load(open(osp.join(work, 'eval', 'ood', name, 'metrics.json')))
           for name in ('ensemble', 'tta_ensemble', 'member_0', 'student')}
    # the student's row: its mIoU and its best scores, recomputed here from the files
    row = next(line for line in report.splitlines() if line.startswith('| student'))
    cells = [c.strip() for c in row.split('|')[1:-1]]
    assert cells[1] == f"{val['student']['mIoU']:.2f}"

    def best(metrics, prefix):
        scored = {k[len(prefix):]: v for k, v in metrics.items()
                  if k.startswith(prefix) and v == v}
        name = max(scored, key=scored.get)
        return f'{scored[name]:.3f} (`{name}`)'

    assert cells[3] == best(val['student'], 'auroc/')
    assert cells[4] == best(ood['student'], 'ood_auroc/')
    # s / image from the side-by-side timing of step 5, not the evaluation passes
    timing = json.load(open(osp.join(work, 'eval', 'timing', 'timing.json')))
    assert timing['images'] == 6 and timing['rounds'] == 3
    # on the CPU timed as training runs there: freed memory kept in the process
    assert timing['freed_memory_kept'] == (not torch.cuda.is_available())
    seconds = timing['seconds_per_image']
    assert sorted(seconds) == ['ensemble', 'member_0', 'student', 'tta_ensemble']
    assert cells[5] == f"{seconds['student']:.3f}"
    assert 'models timed side by side, taking turns' in report
    goals = {g['text']: g for g in json.load(open(osp.join(work, 'goals.json')))['goals']}
    speed = goals['the student is at least 3x faster than the ensemble']['measured']
    assert speed.startswith(f"{seconds['ensemble'] / seconds['student']:.2f}x")
    cost = goals["the student's test_step costs <= 1.15x the member's"]
    assert cost['measured'].startswith(f"{seconds['student'] / seconds['member_0']:.2f}x")
    # the student against the best of the two teachers, by hand from the files
    ood_best = max(v for t in ('ensemble', 'tta_ensemble') for k, v in ood[t].items()
                   if k.startswith('ood_auroc/') and v == v)
    text = "the student's best OOD AUROC is >= the best teacher's and >= 0.93"
    assert f'vs {ood_best:.3f} (' in goals[text]['measured']
    # the epistemic floor, from the saved maps: the student where the ensemble < 0.005
    with np.load(osp.join(work, 'eval', 'val', 'student', 'maps.npz')) as a, \
            np.load(osp.join(work, 'eval', 'val', 'ensemble', 'maps.npz')) as b:
        quiet = b['epistemic'].astype(np.float32) < 0.005
        ours = a['epistemic'].astype(np.float32)[quiet]
    floor = next(g for t, g in goals.items() if 'epistemic map has a median' in t)
    if quiet.any():
        assert floor['measured'].startswith(
            f'{np.median(ours):.4f} nats over {100 * quiet.mean():.1f} %')
    else:  # 20-iteration members may disagree everywhere
        assert floor['measured'] == 'not measured'
    # the student gives the decomposition; the member only its softmax scores
    assert 'ood_auroc/epistemic' in ood['student'] and 'ood_auroc/aleatoric' in ood['student']
    assert not any('epistemic' in k for k in val['member_0'])
    # the goals table is there, one row per goal, with the ensemble's epistemic figure
    assert '## The goals of the main job' in report
    assert len(goals) == 16
    epi = ood['ensemble']['ood_auroc/epistemic']
    assert any(f'epistemic {epi:.3f}' in g['measured'] for g in goals.values())
    assert f'epistemic {epi:.3f}' in report
    # the student's epistemic maps were saved on both splits for the correlation
    for split in ('val', 'ood'):
        assert osp.isfile(osp.join(work, 'eval', split, 'student', 'maps.npz'))
    # the TTA teacher's row, and the config to test it with
    assert '| teacher TTA of the ensemble (M x V = 3 x 2) |' in report
    assert osp.isfile(osp.join(work, 'ensemble', 'tta_ensemble.py'))
    assert '| `epistemic` |' in report and '| `aleatoric` |' in report
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert len([link for link in links if link.startswith('pictures/')]) == 4
    for link in links:
        assert osp.getsize(osp.join(work, link)) > 5000, link


def test_quick_demo_resumes_an_interrupted_run(quick_demo):
    """A rerun skips finished steps; with the student's last checkpoint gone
    (as if stopped), its training resumes from the one before. Only the
    distillation step is unstamped: the steps after it are skipped (the last,
    the report, always runs), which keeps this test to the resume."""
    work = quick_demo['work']
    student = osp.join(work, 'student')
    os.remove(osp.join(student, 'iter_20.pth'))
    with open(osp.join(student, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(student, 'iter_15.pth'))
    os.remove(osp.join(work, '.steps', 'step_4.done'))
    proc = _run_demo(work, quick_demo['data'])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for k in (1, 2, 3, 5, 6):
        assert re.search(rf'=== step {k} of 7: .*: done, skipped ===', proc.stdout), k
    assert not re.search(r'=== step 4 of 7: .*: done, skipped ===', proc.stdout)
    assert 'Iter(train) [20/20]' in proc.stdout
    assert 'Iter(train) [10/20]' not in proc.stdout  # resumed at 15, not restarted
    assert osp.isfile(osp.join(student, 'iter_20.pth'))


def test_a_failed_step_names_itself_and_its_log(demo_module, tmp_path):
    log = str(tmp_path / 'logs' / 'step.log')
    with pytest.raises(SystemExit) as error:
        demo_module.run_command(2, 7, 'train the teacher ensemble', [
            sys.executable, '-c', 'import sys; print("member 1 diverged"); sys.exit(3)'],
            log)
    message = str(error.value)
    assert 'step 2 of 7 (train the teacher ensemble)' in message
    assert 'exit code 3' in message and log in message
    assert 'member 1 diverged' in open(log).read()


def test_too_little_disk_space_stops_before_the_step(demo_module, tmp_path,
                                                     monkeypatch):
    usage = namedtuple('usage', 'total used free')
    monkeypatch.setattr(demo_module.shutil, 'disk_usage',
                        lambda path: usage(10 * 2**30, 10 * 2**30 - 2**20 * 30, 2**20 * 30))
    with pytest.raises(SystemExit) as error:
        demo_module.ensure_free_space(1, 7, 'generate the synthetic benchmark',
                                      str(tmp_path), need_mb=600)
    message = str(error.value)
    assert 'step 1 of 7 (generate the synthetic benchmark)' in message
    assert '600 MB' in message and '30 MB' in message and str(tmp_path) in message
    demo_module.ensure_free_space(1, 7, 'x', str(tmp_path), need_mb=20)  # enough


def test_a_failed_run_keeps_its_finished_steps(demo_module, tmp_path):
    """Step 2 fails: step 1 is stamped and skipped on the rerun, step 2 is
    not stamped and runs again."""
    calls = []
    fail = {'now': True}

    def ok(k, n, title):
        calls.append(k)

    def flaky(k, n, title):
        calls.append(k)
        if fail['now']:
            raise demo_module.DemoError(f'demo: step {k} of {n} ({title}) failed')

    def make():
        demo = demo_module.Demo(str(tmp_path), str(tmp_path / 'data'),
                                demo_module.Plan.quick(), quick=True)
        demo.steps = [('one', ok, 1), ('two', flaky, 1), ('three', ok, 1)]
        demo.progress = demo_module.Progress(['one', 'two', 'three'], [1.0, 1.0, 1.0])
        return demo

    with pytest.raises(SystemExit, match=r'step 2 of 3 \(two\)'):
        make().run()
    assert calls == [1, 2]
    fail['now'] = False
    make().run()
    assert calls == [1, 2, 2, 3]


def test_time_left_scales_the_estimates_by_the_measured_pace(demo_module):
    progress = demo_module.Progress(['a', 'b', 'c'], [10.0, 20.0, 30.0])
    assert progress.time_left(1) == 60.0
    progress.end(1, 20.0)  # twice as slow as estimated
    assert progress.time_left(2) == pytest.approx(2 * 50.0)
    progress.skip(2, 'done')  # a skipped step costs nothing
    assert progress.time_left(2) == pytest.approx(2 * 30.0)
    assert progress.clock(125.4) == '2m05s'


def test_existing_data_is_reused_and_never_lost(demo_module, tiny_data_root, tmp_path):
    """The demo generates only when a split lacks images, and then keeps the
    splits it does not use (make_synthetic.py --overwrite replaces them all)."""
    from conftest import TINY_COUNTS
    from mmseg_uncert.datasets.synthetic_streets import SceneSpec, generate
    assert demo_module.split_counts(tiny_data_root) == TINY_COUNTS
    assert demo_module.generation_plan(tiny_data_root, dict(train=12, val=4)) is None
    assert demo_module.generation_plan(tiny_data_root, dict(train=13, ood=2)) == dict(
        TINY_COUNTS, train=13)
    assert demo_module.generation_plan(str(tmp_path / 'none'), dict(val=3)) == dict(val=3)
    # a sample with a missing file (an interrupted generation) does not count
    root = str(tmp_path / 'data')
    generate(root, dict(val=2), seed=1, spec=SceneSpec(32, 64), workers=1)
    mask = next(osp.join(d, f) for d, _, files in os.walk(osp.join(root, 'gtFine'))
                for f in files if f.endswith('_gtFine_ood.png'))
    os.remove(mask)
    assert demo_module.split_counts(root) == dict(val=1)
    assert demo_module.generation_plan(root, dict(val=2)) == dict(val=2)


def test_data_of_an_older_generator_is_regenerated(demo_module, tmp_path):
    """Data written before the unknown objects changed (no generator record,
    or an older version) would show the old OOD objects: the demo writes it
    again, keeping its splits."""
    import json
    from mmseg_uncert.datasets.synthetic_streets import (GENERATOR_RECORD,
                                                         GENERATOR_VERSION, SceneSpec,
                                                         generate, generator_version)
    root = str(tmp_path / 'data')
    generate(root, dict(val=2, ood=1), seed=1, spec=SceneSpec(32, 64), workers=1)
    assert generator_version(root) == GENERATOR_VERSION
    assert demo_module.generation_plan(root, dict(val=2)) is None
    with open(osp.join(root, GENERATOR_RECORD), 'w') as f:
        json.dump(dict(version=GENERATOR_VERSION - 1), f)
    assert demo_module.generation_plan(root, dict(val=2)) == dict(val=2, ood=1)
    os.remove(osp.join(root, GENERATOR_RECORD))
    assert generator_version(root) is None
    assert demo_module.generation_plan(root, dict(val=2)) == dict(val=2, ood=1)
