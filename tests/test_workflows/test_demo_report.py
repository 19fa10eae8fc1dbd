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
