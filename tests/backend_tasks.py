"""Tiny task functions for tests/test_backend_ray.py, in a module of their own so that spawned pool
workers import nothing heavy (Ray workers get them by value)."""

import time


def slow_square(x: int) -> int:
    time.sleep(0.05 * (3 - x % 4) if x % 4 < 3 else 0)  # later items often finish first
    return x * x


def root(x: float) -> float:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x**0.5


def report_and_wait(folder: str) -> int:
    """Write this worker's pid into ``folder`` and sleep: a task still running when its parent dies."""
    import os
    from pathlib import Path

    Path(folder, f"{os.getpid()}.pid").write_text("")
    time.sleep(120)
    return os.getpid()


def pid(_: object) -> int:
    """The worker's process id (tests of pool reuse)."""
    import os

    return os.getpid()
