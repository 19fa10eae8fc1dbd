"""tools/make_synthetic.py: its command line, its checks and the splits it writes."""
import importlib.util
import os.path as osp

import pytest

from conftest import ROOT, run_tool


def _make_synthetic():
    """tools/make_synthetic.py as a module, to call main() in-process."""
    spec = importlib.util.spec_from_file_location(
        'make_synthetic', osp.join(ROOT, 'tools', 'make_synthetic.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / 'keep.txt').write_text('x')
    with pytest.raises(SystemExit) as info:
        _make_synthetic().main(['--out-dir', str(tmp_path), '--splits',
                                'train', '--train', '1'])
    assert '--overwrite' in str(info.value.code)
    assert not (tmp_path / 'leftImg8bit').exists()


@pytest.mark.parametrize('args,message', [
    (['--train', '-1'], '--train must be >= 0'),
    (['--shift-val', '-2'], '--shift-val must be >= 0'),
    (['--height', '8'], 'at least 32 pixels'),
    (['--splits', 'train,test'], "unknown split(s) ['test']"),
    (['--workers', '0'], '--workers must be >= 1'),
])
def test_cli_rejects_invalid_counts_sizes_and_splits(tmp_path, args, message):
    with pytest.raises(SystemExit) as info:
        _make_synthetic().main(['--out-dir', str(tmp_path / 'out'), *args])
    assert message in str(info.value.code)
    assert not (tmp_path / 'out').exists()


def test_cli_writes_the_requested_splits(tmp_path):
    out = tmp_path / 'out'
    proc = run_tool(['tools/make_synthetic.py', '--out-dir', str(out),
                     '--splits', 'val,ood', '--val', '2', '--ood', '1',
                     '--height', '32', '--width', '64', '--workers', '1'])
    assert 'wrote 3 images' in proc.stdout
    assert sorted(p.name for p in (out / 'leftImg8bit').iterdir()) == ['ood', 'val']
    assert len(list((out / 'gtFine' / 'val').rglob('*.png'))) == 2 * 3
