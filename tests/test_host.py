"""Facts about the host: usable cores and the Jetson L4T release, each parsed in one place."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgehal.host import parse_l4t_release, usable_cores

# ay65535/dotfiles local/share/jetson-nano/firstrun.sh: `cat /etc/nv_tegra_release` on a Nano (verbatim).
NANO_RELEASE = ("# R32 (release), REVISION: 7.6, GCID: 38171779, BOARD: t210ref, EABI: aarch64, "
                "DATE: Tue Nov  5 07:46:14 UTC 2024\n")


def test_parse_l4t_release():
    assert parse_l4t_release(NANO_RELEASE) == "32.7.6"
    assert parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic") == "36.4.3"
    assert parse_l4t_release("# R35 (release), REVISION: 4.1., GCID: 1") == "35.4.1"
    assert parse_l4t_release("Ubuntu 22.04") is None
    assert parse_l4t_release("") is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity (os.sched_setaffinity)")
def test_usable_cores_follow_the_cpu_affinity():
    # In a child process pinned to one core, as `taskset -c N` or a cgroup cpuset would.
    core = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{core}}}); "
            "from edgehal.host import usable_cores; print(usable_cores())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"
    assert usable_cores() == len(os.sched_getaffinity(0))
