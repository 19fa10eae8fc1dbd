"""The README's results tables are those of the committed results files."""
from __future__ import annotations

import importlib.util
import json
import os.path as osp

from conftest import ROOT


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(
        f'benchmark_{name}', osp.join(ROOT, 'benchmarks', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cost_table_is_that_of_the_scale_results():
    scale = _benchmark('scale')
    with open(osp.join(ROOT, 'benchmarks', 'results', 'scale.json')) as f:
        table = scale.readme_table(json.load(f))
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert table in readme, ('README.md: the cost table is not that of '
                             'benchmarks/results/scale.json; paste the output of '
                             'python benchmarks/scale.py --readme')
