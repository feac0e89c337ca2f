"""The CPU's name, flags and native bf16, read from a cpuinfo file."""

from __future__ import annotations

import pytest

import visprior.cpu_info as cpu_info

# two processors as Linux lists them; only the first one counts
AMX_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
EPYC = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
AVX2_ONLY = "model name\t: Intel(R) Xeon(R) CPU @ 2.80GHz\nflags\t\t: fpu avx2 avx512f\n"
NO_FLAGS = "processor\t: 0\nmodel name\t: ARMv8 board\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the module at a cpuinfo file written by the test."""

    def use(text: str | None):
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(cpu_info, "_CPUINFO", path)
        cpu_info._read_cpuinfo.cache_clear()

    yield use
    cpu_info._read_cpuinfo.cache_clear()


@pytest.mark.parametrize(
    ("text", "name", "bf16", "flags"),
    [
        (AMX_XEON, "Intel(R) Xeon(R) Platinum 8480+", "amx_bf16", (True, True, True, True)),
        (EPYC, "AMD EPYC 9R14", "avx512_bf16", (True, True, True, False)),
        (AVX2_ONLY, "Intel(R) Xeon(R) CPU @ 2.80GHz", "none", (True, True, False, False)),
    ],
)
def test_the_first_processor_names_the_cpu_and_its_bf16(cpuinfo, text, name, bf16, flags):
    cpuinfo(text)
    assert cpu_info.cpu_model_name() == name
    assert cpu_info.cpu_bf16_support() == bf16
    assert cpu_info.cpu_flags() == dict(zip(cpu_info.CPU_FLAGS, flags, strict=True))


def test_without_flags_bf16_is_unknown_and_the_name_still_comes(cpuinfo):
    cpuinfo(NO_FLAGS)
    assert cpu_info.cpu_model_name() == "ARMv8 board"
    assert cpu_info.cpu_bf16_support() == "unknown"
    assert set(cpu_info.cpu_flags().values()) == {None}


def test_without_a_cpuinfo_file_the_platform_names_the_cpu(cpuinfo):
    cpuinfo(None)
    assert cpu_info.cpu_model_name()  # the platform's name, never empty
    assert cpu_info.cpu_bf16_support() == "unknown"


def test_this_machine_gets_an_answer_from_the_known_set():
    assert cpu_info.cpu_bf16_support() in {"amx_bf16", "avx512_bf16", "none", "unknown"}
