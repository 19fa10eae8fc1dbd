"""Keep freed CPU memory in the process, so that training steps do not
fault it in again from the OS each time."""
from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest trim threshold ``mallopt`` takes (an int)
LARGEST_TRIM_THRESHOLD = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every allocation from its heap (``M_MMAP_MAX``
    0) and keep up to 2 GiB of freed memory at the top of it instead of
    returning it to the OS (``M_TRIM_THRESHOLD``).

    Why: PyTorch allocates CPU tensors with malloc. glibc maps allocations
    above 32 MiB fresh from the OS and unmaps them on free, so each training
    step touches new pages, which the kernel faults in and zeroes. At
    Cityscapes size (batch 2 of 512x1024 crops, 2 cores) a distillation step
    took 6.9 million page faults and 20 s of kernel time, 35 s in all, and
    a plain student step 17 s; with the memory kept, no fault after the
    first step, 24 s and 11 s (one comparison with and without this
    setting, on the models and batch of ``benchmarks/scale.py``). On GPUs PyTorch's
    caching allocator keeps memory the same way. The cost: the process's
    resident memory stays near its peak. What this guarantees is glibc's side
    (the tensors stay in its heap, ``tests/test_engine/test_cpu_memory.py``); whether the
    kernel keeps their pages mapped is the kernel's: one run of the suite on
    a machine of the same kind faulted all of them in again.

    Returns whether it applied (False where the C library has no
    ``mallopt``, e.g. macOS or musl).
    """
    name = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                         LARGEST_TRIM_THRESHOLD))
