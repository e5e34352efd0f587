"""The peak resident memory of this process in MB, not inherited from the process that started it.

``getrusage(RUSAGE_SELF).ru_maxrss`` is the usual call, but on Linux a process started
through fork and exec (every ``subprocess.run``) begins with its parent's high-water
mark: after a parent that had peaked at 8.6 GB, every child measured "8.6 GB", whatever
it ran. The kernel's ``VmHWM`` (``/proc/self/status``) belongs to the process's own
address space, which exec starts afresh. Where there is no ``/proc`` (macOS),
``ru_maxrss`` is all there is: start the measured processes from a small parent there.
"""

from __future__ import annotations

import resource
import sys


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB."""
    hwm = proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    )  # bytes on macOS, KiB on Linux
