"""The distillation report: best scores, goals and its tables in docs/benchmarks.md."""
import pytest

from mmseg_uncert.workflows.distillation_report import check_goals, decomposition_table

from conftest import ROOT
from helpers.model_summaries import ENSEMBLE, MEMBER, _model


def test_best_scores_skip_nan_and_pick_the_highest():
    assert ENSEMBLE.best('misclassification') == ('max_prob', 0.93)
    assert ENSEMBLE.best('ood') == ('epistemic', 0.95)
    assert MEMBER.best('ood') == ('max_prob', 0.86)  # the NaN entropy is left out


def test_goals_by_hand():
    student = _model('student', 77.5, 0.045, 0.11, dict(max_prob=0.915, epistemic=0.8),
                     dict(epistemic=0.94, max_prob=0.8), dict(aleatoric=0.7))
    goals = check_goals(ENSEMBLE, MEMBER, student, 0.85, members=3)
    assert [g.met for g in goals] == [
        True,   # ensemble misclassification 0.93 - 0.90 = 0.03 >= 0.02
        True,   # student 0.915 >= 0.93 - 0.02 and > 0.90
        True,   # ensemble OOD 0.95 - 0.86 = 0.09
        True,   # student OOD 0.94 >= 0.93, > 0.86
        True,   # epistemic 0.95 >= 0.90 and > aleatoric 0.85
        True,   # ambiguous: aleatoric 0.80 > epistemic 0.60
        False,  # ECE 0.045 > min(0.030, 0.020) + 0.02 = 0.040
        True,   # Pearson 0.85 >= 0.8
        True,   # mIoU 77.5 >= 77.0
        False,  # 0.30 / 0.11 = 2.73 < 3
    ]
    assert '2.73x' in goals[-1].measured
    assert check_goals(ENSEMBLE, MEMBER, student, None, 3)[7].measured == 'not measured'


def test_decomposition_table_puts_each_task_in_its_column():
    lines = decomposition_table([ENSEMBLE], scores=('epistemic', ))
    header = [c.strip() for c in lines[0].split('|')[1:-1]]
    row = [c.strip() for c in lines[2].split('|')[1:-1]]
    assert dict(zip(header, row)) == {
        'model': 'ensemble', 'score': '`epistemic`', 'misclassified pixels (val)': '0.900',
        'ambiguous pixels (val)': '0.600', 'OOD pixels (ood)': '0.950'}
    with pytest.raises(KeyError, match='member has no score for ambiguous'):
        _model('member', 1, 0, 1, {}, {}, {}).best('ambiguous')


def test_benchmark_tables_from_a_results_file():
    from mmseg_uncert.workflows.distillation_report import benchmark_tables

    def row(miou, ece, seconds, misc, ood, amb, pearson=None):
        r = dict(mIoU=miou, ECE=ece, seconds_per_image=seconds,
                 auroc=dict(misclassification=misc, ood=ood, ambiguous=amb),
                 best_misclassification=max(misc.items(), key=lambda kv: kv[1]),
                 best_ood=max(ood.items(), key=lambda kv: kv[1]))
        if pearson is not None:
            r['epistemic_vs_ensemble'] = dict(pearson=pearson)
        return r

    result = dict(
        rows={'member': row(77.0, 0.02, 0.1, dict(max_prob=0.9), dict(max_prob=0.8),
                            dict(max_prob=0.7)),
              'student decomposition': row(78.123, 0.03, 0.12, dict(max_prob=0.91),
                                           dict(epistemic=0.93, aleatoric=0.9),
                                           dict(aleatoric=0.85, epistemic=0.7), 0.5)},
        goals={'student decomposition': [dict(text='a', measured='1 vs 2', met=True),
                                         dict(text='b', measured='3', met=False)]},
        recipe_over_seeds=dict(students=['s1', 's2'], goals_met=[1, 2],
                               mIoU=dict(mean=78.0, std=0.5, values=[77.5, 78.5])),
        forum_collapse=dict(student=[dict(iteration=10, mean=0.2, fraction_below_0_01=0.5)],
                            teacher=dict(mean=0.004, fraction_below_0_01=0.9)))
    lines = benchmark_tables(result)
    # the member has neither map nor Pearson: dashes, not zeros
    assert lines[2] == ('| member | 77.00 | 0.0200 | 0.900 (`max_prob`) | 0.800 (`max_prob`) '
                        '| — / — | — / — | — | 0.100 |')
    assert lines[3] == ('| student decomposition | 78.12 | 0.0300 | 0.910 (`max_prob`) '
                        '| 0.930 (`epistemic`) | 0.930 / 0.900 | 0.850 / 0.700 | 0.500 | 0.120 |')
    assert '(1 of 2 met)' in lines[5]
    assert '| b | 3 | **no** |' in lines
    assert '| mIoU | 78.00 ± 0.50 | 77.50 · 78.50 |' in lines
    assert '| 10 | 0.2000 | 50.00 % |' in lines
    assert any('mean 0.0040, 90.0 % of it below 0.01' in line for line in lines)


def test_readme_holds_the_benchmark_tables_of_the_committed_results():
    """The student tables of docs/benchmarks.md (moved there from the README)
    are the committed results file's, as ``benchmarks/distillation.py
    --tables`` prints them: no figure typed by hand."""
    import json
    import os.path as osp

    from mmseg_uncert.workflows.distillation_report import benchmark_tables
    root = ROOT
    with open(osp.join(root, 'benchmarks', 'results', 'distillation.json')) as f:
        tables = '\n'.join(benchmark_tables(json.load(f)))
    with open(osp.join(root, 'docs', 'benchmarks.md')) as f:
        assert tables in f.read()
