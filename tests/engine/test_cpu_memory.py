"""glibc keeps freed tensor memory for reuse once ``keep_freed_memory`` has run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor (above glibc's largest dynamic mmap threshold, below
# visprior's) a number of times; prints the minor page faults those allocations took. The
# process first loads what `visprior`'s command line loads: in a process that has imported
# torch alone, 7 of the 10 allocations still faulted in (the heap's layout differs).
_FAULTS = """
import json, resource, sys
import torch
import visprior.cli.app  # what the command line has loaded when it calls keep_freed_memory
from visprior.engine.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 * 2**20).fill_(1.0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": applied, "faults": after - before}))
"""


def _faults(mode: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode],
        capture_output=True, text=True, check=True, env=environment,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _is_glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="glibc's mallopt only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    plain = _faults("plain")
    tuned = _faults("tuned")
    assert tuned["applied"] is True
    pages = 10 * 64 * 2**20 // 4096
    # untuned: every 64 MiB allocation is a fresh mapping whose pages all fault in again
    assert plain["faults"] > 0.8 * pages
    assert tuned["faults"] < 0.25 * pages  # at most a couple of the ten fault in


@pytest.mark.skipif(not _is_glibc(), reason="glibc's mallopt only")
def test_opt_out_and_the_users_own_glibc_settings_are_respected():
    assert _faults("tuned", VISPRIOR_MALLOC_TUNING="0")["applied"] is False
    assert _faults("tuned", MALLOC_TRIM_THRESHOLD_="1000000")["applied"] is False
