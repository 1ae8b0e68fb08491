"""The thread policy of the command line and the benchmark scripts.

torch runs its CPU operations on one thread per physical core by default.
On a machine that is busy with other jobs, these threads compete for the
same cores and wait on each other: on a 2-core machine shared with other
processes, the no-weights quick start took 37-40 s with torch's default
threads and 4.5 s with ``OMP_NUM_THREADS=1``. When the user has not chosen
(no ``OMP_NUM_THREADS``), the command line and the benchmarks therefore
use as many threads as the machine has idle CPUs. The library itself never
changes torch's settings: in Python, call :func:`torch.set_num_threads`.
"""

import os

__all__ = ["idle_cpus", "configure_torch_threads"]


def idle_cpus():
    """CPUs this process may use minus the 1-minute load average, >= 1.

    Examples
    --------
    >>> from dsolo_sk._threads import idle_cpus
    >>> 1 <= idle_cpus() <= (os.cpu_count() or 1)
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        load = 0.0
    return max(1, min(cpus, int(cpus - load)))


def configure_torch_threads():
    """Give torch :func:`idle_cpus` threads unless the user chose a count.

    Does nothing when ``OMP_NUM_THREADS`` is set (torch then follows it);
    otherwise sets :func:`torch.set_num_threads` to the idle CPUs, never
    more than torch's own default.

    Returns
    -------
    int or None
        The thread count set, or None when the environment decides.
    """
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    import torch

    n = max(1, min(idle_cpus(), torch.get_num_threads()))
    torch.set_num_threads(n)
    return n
