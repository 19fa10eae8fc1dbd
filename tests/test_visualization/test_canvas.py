"""Figures drawn off screen: the plugin neither imports nor configures matplotlib.

mmseg_uncert.visualization.canvas, on which the panels and the reliability
diagrams of mmseg_uncert.visualization.calibration_plots are drawn.
"""
import json
import os.path as osp
import subprocess
import sys
import textwrap

from conftest import ROOT, tool_env

CHECK_MATPLOTLIB = textwrap.dedent('''
    import builtins, json, sys
    requested = []
    real_import = builtins.__import__

    def spy(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get('__name__') or ''
        if importer.startswith('mmseg_uncert') and name.startswith('matplotlib'):
            requested.append([importer, name])
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = spy
    import mmseg.models
    from_mmseg = sorted(m for m in sys.modules if m.startswith('matplotlib'))
    import mmseg_uncert, mmseg_uncert.visualization
    import mmseg_uncert.apis.uncertainty_inferencer, mmseg_uncert.apis.infer_files
    added = sorted(m for m in sys.modules if m.startswith('matplotlib')
                   and m not in from_mmseg)
    builtins.__import__ = real_import
    import matplotlib
    import numpy as np, torch
    from mmseg_uncert.evaluation.curves import reliability_diagram
    from mmseg_uncert.visualization import (Panel, draw_panels,
                                            plot_reliability_diagram)

    def draw(folder):
        draw_panels([Panel('m', np.ones((4, 8)), 'map')], folder + '/p.png')
        plot_reliability_diagram(reliability_diagram(torch.ones(3), torch.ones(3),
                                                     torch.ones(3)), folder + '/r.png')
        return matplotlib.get_backend()

    from_env = draw(sys.argv[1])  # MPLBACKEND=svg
    matplotlib.use('pdf')
    print(json.dumps(dict(requested=requested, added=added,
                          mmseg_imports_it=bool(from_mmseg), from_env=from_env,
                          after_use=draw(sys.argv[1]))))
''')


def test_the_plugin_neither_imports_nor_configures_matplotlib(tmp_path):
    env = dict(tool_env(), MPLBACKEND='svg')
    out = subprocess.run([sys.executable, '-c', CHECK_MATPLOTLIB, str(tmp_path)],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found['requested'] == []  # no module of ours imports matplotlib
    assert found['added'] == []      # nothing beyond what mmseg imports
    # drawing leaves the user's backend, from MPLBACKEND or matplotlib.use
    assert (found['from_env'], found['after_use']) == ('svg', 'pdf')
    assert osp.isfile(tmp_path / 'p.png') and osp.isfile(tmp_path / 'r.png')
