"""Print the CMAKE_ARGS that build llama-cpp-python for this machine's CPU.

The Makefile passes them to pip when it installs the llama.cpp server for
the integration test (``tests/test_llama_server.py``). On x86-64 Linux the
build names the CPU's vector extensions explicitly instead of using
``-march=native`` and leaves out the AMX kernels: on some of the project's
CPU machines the default native build crashed inside ggml's AMX matrix
kernels. Elsewhere (macOS, ARM) it prints nothing and llama.cpp's own
defaults apply.

Usage: ``python tools/llama_cmake_args.py [--cpuinfo PATH]``
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

#: CMake switch of ggml for each /proc/cpuinfo flag.
FLAG_OPTIONS = {
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx512f": "GGML_AVX512",
}
AMX_OFF = ("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")


def cpu_flags(cpuinfo: Path) -> set[str]:
    """Return the flags of the first processor listed in a /proc/cpuinfo file."""
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str]) -> str:
    """Return the CMAKE_ARGS for an x86-64 CPU with these /proc/cpuinfo flags."""
    options = ["-DGGML_NATIVE=OFF"]
    options += [f"-D{option}={'ON' if flag in flags else 'OFF'}" for flag, option in FLAG_OPTIONS.items()]
    return " ".join(options + list(AMX_OFF))


def main() -> None:
    """Print the arguments, or nothing where llama.cpp's defaults should apply."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"), help="file to read the CPU flags from")
    arguments = parser.parse_args()
    if platform.machine() not in ("x86_64", "AMD64") or not arguments.cpuinfo.is_file():
        return
    print(cmake_args(cpu_flags(arguments.cpuinfo)))


if __name__ == "__main__":
    main()
