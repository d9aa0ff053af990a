"""The process's limit on open files: every client connection is one."""

from __future__ import annotations

import contextlib
import resource


def raise_open_file_limit() -> int:
    """Lifts the soft limit on open files to the hard one, and returns the limit in force.

    Every client connection is a file descriptor: a soft limit of 1024, a common default, would refuse connections
    long before memory or CPU run out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft
