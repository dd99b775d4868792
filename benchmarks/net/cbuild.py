"""Build the C tools of the network benchmarks on demand.

``build("loadgen")`` compiles ``benchmarks/net/loadgen.c`` with
``$CC -O2`` (CC defaults to ``cc``) into ``benchmarks/net/build/`` (ignored by
git) and returns the executable's path.  The file name carries a hash of the
source and the command, so an edited source is rebuilt and an unchanged one
is reused.
"""

import hashlib
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
CFLAGS = ("-O2",)
COMPILE_TIMEOUT = 120


class BuildError(Exception):
    pass


def build(name):
    src = HERE / f"{name}.c"
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256(
        src.read_bytes() + repr((cc, CFLAGS)).encode()).hexdigest()[:12]
    exe = BUILD_DIR / f"{name}-{digest}"
    if exe.exists():
        return exe
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = exe.with_name(exe.name + f".tmp{os.getpid()}")
    cmd = [cc, *CFLAGS, "-o", str(tmp), str(src)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    tmp.replace(exe)
    return exe
