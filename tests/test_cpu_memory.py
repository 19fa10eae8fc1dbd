"""Freed CPU memory kept in the process: a freed tensor's pages are reused."""
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent('''
    import resource, sys, torch
    from mmseg_uncert.engine.cpu_memory import keep_freed_memory

    def faults_of_a_fresh_tensor():
        # a 256 MiB tensor written once, then freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(64 * 2 ** 20)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_a_fresh_tensor()
    default = faults_of_a_fresh_tensor()
    applied = keep_freed_memory()
    faults_of_a_fresh_tensor()  # the heap grows once
    kept = faults_of_a_fresh_tensor()
    print(applied, default, kept)
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_a_freed_tensor_is_not_faulted_in_again():
    """By default glibc unmaps a freed 256 MiB tensor, so the next one faults
    in all its 65 536 pages of 4 KiB (fewer with huge pages); with
    keep_freed_memory the heap keeps them: almost no fault. In a child
    process, as the setting is process-wide."""
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    applied, default, kept = out[0] == 'True', int(out[1]), int(out[2])
    if not applied:
        pytest.skip('the C library has no mallopt (not glibc)')
    pages = 256 * 2 ** 20 // 4096
    assert default >= pages // 512  # at least one fault per 2 MiB huge page
    assert kept < 100
    assert kept < default / 5
