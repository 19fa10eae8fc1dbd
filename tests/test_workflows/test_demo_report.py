"""The demo report's sentences: the student against the member and the ensemble."""
import pytest

from helpers.model_summaries import ENSEMBLE, MEMBER, _model


@pytest.mark.parametrize('student_ood, expected', [
    (0.97, 'student 0.970 (`epistemic`): the student is above the member and above the '
           'ensemble (+0.020).'),
    (0.94, 'student 0.940 (`epistemic`): the student is above the member and within 0.02 '
           'of the ensemble.'),
    (0.85, 'student 0.850 (`epistemic`): the student is not above the member and more than '
           '0.02 of the ensemble.'),
])
def test_demo_sentences_place_the_student_against_member_and_ensemble(student_ood, expected):
    from mmseg_uncert.workflows.demo_report import ROWS, observations
    student = _model('student', 77.5, 0.045, 0.11, dict(max_prob=0.915),
                     dict(epistemic=student_ood), dict(aleatoric=0.7))
    (_, e), (_, m), (_, s) = ROWS
    lines = observations({e: ENSEMBLE, m: MEMBER, s: student}, pearson=0.5)
    ood_line = next(line for line in lines if line.startswith('- **Finding unknown objects**'))
    # ensemble 0.95 (epistemic), member 0.86 (max_prob), by hand
    assert ood_line.endswith(expected)
    assert 'ensemble 0.950 (`epistemic`), member 0.860 (`max_prob`)' in ood_line
    assert lines[0] == ('- **Speed:** the student needs 0.110 s per image, 2.7x less than '
                        'the ensemble (0.300 s).')


def test_student_goals_take_the_best_teacher_for_each_task():
    from mmseg_uncert.workflows.demo_report import student_goals
    tta = _model('tta', 79.0, 0.035, 0.6, dict(max_prob=0.94, epistemic=0.91),
                 dict(epistemic=0.96, max_prob=0.9), dict(aleatoric=0.85))
    student = _model('student', 77.5, 0.015, 0.105, dict(max_prob=0.935),
                     dict(epistemic=0.955), dict(aleatoric=0.81))
    summaries = {'ensemble': ENSEMBLE, 'tta_ensemble': tta, 'member_0': MEMBER,
                 'student': student}
    goals = student_goals(summaries, ('ensemble', 'tta_ensemble'), (0.004, 0.5))
    by_text = {g.text: g for g in goals}
    ood = by_text["the student's best OOD AUROC is >= the best teacher's and >= 0.93"]
    # the TTA teacher's 0.96 beats the ensemble's 0.95 and the student's 0.955
    assert ood.measured == '0.955 (`epistemic`) vs 0.960 (tta, `epistemic`)' and not ood.met
    mis = by_text["the student's best misclassification AUROC is >= the best teacher's"]
    assert mis.measured == '0.935 (`max_prob`) vs 0.940 (tta, `max_prob`)' and not mis.met
    assert by_text["the student's ECE is at most the member's"].met  # 0.015 <= 0.020
    amb = by_text["the student's aleatoric map finds ambiguous pixels at least as well "
                  "as the ensemble's"]
    assert amb.measured == 'AUROC 0.810 vs 0.800' and amb.met
    floor = next(g for g in goals if 'epistemic map has a median' in g.text)
    assert floor.measured == '0.0040 nats over 50.0 % of the val pixels' and floor.met
    cost = by_text["the student's test_step costs <= 1.15x the member's"]
    assert cost.measured.startswith('1.05x') and cost.met  # 0.105 / 0.100
    # without a floor measurement the goal is not met, and says so
    unmeasured = student_goals(summaries, ('ensemble', ), None)
    assert [g.measured for g in unmeasured if 'median' in g.text] == ['not measured']
    assert not next(g for g in unmeasured if 'median' in g.text).met
    # with the ensemble alone, its 0.95 is the OOD bar, which the student passes
    assert unmeasured[0].met and unmeasured[0].measured.endswith('(ensemble, `epistemic`)')
