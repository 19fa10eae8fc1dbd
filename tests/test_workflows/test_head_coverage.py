"""A DualHead around every decode-head type in mmseg's shipped configs.

The head types and their configs are read from the installed mmseg's own
``configs/`` at test time, so a new mmseg's new heads are checked (and fail
the committed-results test until ``tools/head_coverage.py`` is re-run).
"""
from __future__ import annotations

import json
import math
import os.path as osp

import pytest

from mmseg_uncert.workflows.head_coverage import (RESULTS, check_head, coverage_table,
                                                  shipped_head_configs, table_in)

from conftest import ROOT

HEADS = shipped_head_configs()
with open(osp.join(ROOT, RESULTS)) as f:
    COMMITTED = json.load(f)
COMMITTED_BY_HEAD = {r['head']: r for r in COMMITTED['results']}
#: the issue's goal: at most this many head types refused
MAX_REFUSED = 3


@pytest.mark.parametrize('head', sorted(HEADS))
def test_dual_head_around_every_shipped_mmseg_head(head):
    result = check_head(head, HEADS[head])
    committed = COMMITTED_BY_HEAD.get(head)
    assert committed is not None, (
        f'mmseg ships decode head {head} ({HEADS[head]}), which '
        f'{RESULTS} does not list: run python tools/head_coverage.py')
    assert (result['status'], result['reason'], result['config']) == (
        committed['status'], committed['reason'], committed['config'])
    if result['status'] == 'refused':
        # the error names the head and says why
        assert head in result['reason'].split(':', 1)[0] and len(result['reason']) > 80
        return
    assert result['logits_equal'], 'same weights must give the bare model\'s logits'
    assert result['loss_equal'] and all(result['loss_equal'].values()), result['loss_equal']
    assert result['channels'] == result['num_classes'] + 2
    assert result['maps'] == ['aleatoric', 'epistemic']
    terms = result['distill_losses']
    assert set(terms) == {'distill.loss_kd', 'distill.loss_uncertainty',
                          'distill.loss_pairwise', 'distill.loss_mimic'}
    assert all(math.isfinite(v) and v >= 0 for v in terms.values())
    assert result['branch_learns']


def test_committed_results_cover_mmseg_heads_and_meet_the_goal():
    assert sorted(COMMITTED_BY_HEAD) == sorted(HEADS)
    refused = [r['head'] for r in COMMITTED['results'] if r['status'] == 'refused']
    assert len(refused) <= MAX_REFUSED, refused
    import mmseg
    assert COMMITTED['mmseg'] == mmseg.__version__


@pytest.mark.parametrize('doc', ['docs/components/dual_head.md'])
def test_docs_hold_the_table_of_the_committed_results(doc):
    assert table_in(osp.join(ROOT, doc)) == coverage_table(COMMITTED)


def test_discovery_finds_the_head_types_of_mmseg_1_2_2():
    """Spot checks of what the config scan must find (by hand from mmseg
    1.2.2's configs/): a cascade's two stages, a query head that needs
    mmdet, an auxiliary-only head left out."""
    assert HEADS['OCRHead'].startswith('ocrnet/')
    assert HEADS['FCNHead']  # OCRNet's first stage and plain FCNs
    assert HEADS['Mask2FormerHead'].startswith('mask2former/')
    assert HEADS['PSPHead'] == 'pspnet/pspnet_r18-d8_4xb4-80k_isaid-896x896.py'
    assert 'STDCHead' not in HEADS  # STDC's boundary head is an auxiliary head only
    assert len(HEADS) == 35
