"""keep_freed_memory: freed CPU memory stays in the process.

Torch's large tensors come from the heap, and the heap keeps them when they
are freed.
"""
import subprocess
import sys
import textwrap

import pytest

# glibc's own account of its memory (mallinfo2, glibc >= 2.33): what the
# setting changes, whatever the kernel then does with the pages (page-fault
# counts also depend on the kernel, e.g. NUMA balancing faults, so the time it
# saves is measured in benchmarks/scale.py, not here).
PROBE = textwrap.dedent('''
    import ctypes, ctypes.util, torch
    from mmseg_uncert.engine.cpu_memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
            'fsmblks', 'uordblks', 'fordblks', 'keepcost')]

    libc = ctypes.CDLL(ctypes.util.find_library('c'))
    if not hasattr(libc, 'mallinfo2'):
        print('no-mallinfo2')
        raise SystemExit
    libc.mallinfo2.restype = MallInfo2

    def account():
        # a 256 MiB tensor: the bytes it adds to what is mapped apart (hblkhd)
        # and to the heap (arena), the heap's size while it lives and after it
        # is freed, and the heap's free bytes (fordblks) then
        before = libc.mallinfo2()
        tensor = torch.ones(64 * 2 ** 20)
        alive = libc.mallinfo2()
        del tensor
        freed = libc.mallinfo2()
        return (alive.hblkhd - before.hblkhd, alive.arena - before.arena,
                alive.arena, freed.arena, freed.fordblks)

    default = account()
    applied = keep_freed_memory()
    kept = account()
    print(applied, *default, *kept)
''')

MIB = 2 ** 20


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_a_freed_tensor_stays_in_the_heap():
    """By default glibc maps a 256 MiB allocation apart and unmaps it on free;
    with keep_freed_memory it comes from the heap, and the heap keeps its
    256 MiB free after the tensor is freed. In a child process, as the setting
    is process-wide."""
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    if out == ['no-mallinfo2'] or out[0] != 'True':
        pytest.skip('the C library is not glibc >= 2.33 (no mallopt or mallinfo2)')
    default, kept = [int(v) for v in out[1:6]], [int(v) for v in out[6:11]]
    assert default[0] >= 256 * MIB  # default: mapped apart,
    assert default[1] < 256 * MIB  # not in the heap
    k_mapped, _, k_heap_alive, k_heap_freed, k_free = kept
    assert k_mapped < 256 * MIB  # kept: not mapped apart
    assert k_heap_alive >= 256 * MIB  # but in the heap,
    assert k_heap_freed >= k_heap_alive  # which is not trimmed on free
    assert k_free >= 256 * MIB  # and holds the freed bytes for the next tensor
