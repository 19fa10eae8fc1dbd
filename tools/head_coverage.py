"""Check a DualHead around every decode-head type in mmseg's shipped configs
and write the results and the coverage tables.

    python tools/head_coverage.py            # all head types (about 2 min)
    python tools/head_coverage.py PSPHead    # some, printed only

With no head named, writes ``benchmarks/results/head_coverage.json`` and the
table between the ``head-coverage`` markers of
``docs/components/dual_head.md``. The test suite runs the same checks and
compares them with the committed file.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmseg_uncert.workflows.head_coverage import (RESULTS, check_head,  # noqa: E402
                                             coverage_summary, coverage_table,
                                             shipped_head_configs, write_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('heads', nargs='*', help='head types to check (default: all)')
    args = parser.parse_args()
    found = shipped_head_configs()
    unknown = sorted(set(args.heads) - set(found))
    if unknown:
        parser.error(f'no shipped mmseg config has decode head {unknown}; the types '
                     f'are {sorted(found)}')
    results = []
    for head in args.heads or sorted(found):
        start = time.perf_counter()
        result = check_head(head, found[head])
        print(f"{head:32s} {result['status']:9s} {time.perf_counter() - start:5.1f} s "
              f"{result['reason']}", flush=True)
        results.append(result)
    if args.heads:
        return
    import mmseg
    payload = dict(date=time.strftime('%Y-%m-%d'), mmseg=mmseg.__version__,
                   summary=coverage_summary(results), results=results)
    with open(osp.join(ROOT, RESULTS), 'w') as f:
        json.dump(payload, f, indent=1)
        f.write('\n')
    write_table(osp.join(ROOT, 'docs', 'components', 'dual_head.md'),
                coverage_table(payload))
    print(f'{coverage_summary(results)}; wrote {RESULTS} and the table')


if __name__ == '__main__':
    main()
