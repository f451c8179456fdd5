"""``cmake --install`` gives what a pipeline uses: ``find_package(smat)`` in CMake, ``pkg-config smat`` in C."""

from __future__ import annotations

import os
import subprocess

CONSUMER_CMAKE = """cmake_minimum_required(VERSION 3.18)
project(consumer CXX)
find_package(smat 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE smat::smat)
"""
CONSUMER_CPP = """#include <smat/smat.hpp>
#include <cstdio>
int main() {
    const auto mask = smat::rasterize({smat::Box{1, 1, 4, 4}}, 8, 8);
    int marked = 0;
    for (auto v : mask) marked += v;
    std::printf("%s %d\\n", smat::version(), marked);
    return marked == 9 ? 0 : 1;
}
"""
C_PROGRAM = """#include <smat/smat.h>
#include <stdio.h>
int main(void) { printf("%s\\n", smat_version()); return 0; }
"""


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_an_installed_smat_is_found_by_cmake_and_pkg_config(cpp_build, tmp_path):
    prefix = tmp_path / "prefix"
    _run(["cmake", "--install", str(cpp_build), "--prefix", str(prefix)])
    assert (prefix / "include" / "smat" / "smat.hpp").is_file() and (prefix / "include" / "smat" / "smat.h").is_file()
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "CMakeLists.txt").write_text(CONSUMER_CMAKE)
    (consumer / "main.cpp").write_text(CONSUMER_CPP)
    _run(["cmake", "-S", str(consumer), "-B", str(consumer / "build"), f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run(["cmake", "--build", str(consumer / "build")])
    assert _run([str(consumer / "build" / "consumer")]).stdout.strip() == "0.1.0 9"
    (tmp_path / "c.c").write_text(C_PROGRAM)
    pc_dirs = [str(p.parent) for p in prefix.rglob("smat.pc")]
    env = {**os.environ, "PKG_CONFIG_PATH": os.pathsep.join(pc_dirs)}
    flags = _run(["pkg-config", "--cflags", "--libs", "smat"], env=env).stdout.split()
    libdir = next(flag[2:] for flag in flags if flag.startswith("-L"))
    _run(["cc", str(tmp_path / "c.c"), *flags, f"-Wl,-rpath,{libdir}", "-o", str(tmp_path / "c")])
    assert _run([str(tmp_path / "c")]).stdout.strip() == "0.1.0"
