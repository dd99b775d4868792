"""The C sources follow .clang-format (PEP 7 layout; see STYLE.md).

Needs the `clang-format` executable (Debian/Ubuntu: apt-get install -y
clang-format; or set CLANG_FORMAT to its path).  Without it this test
fails: the style check is part of the suite, not optional.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _clang_format():
    exe = os.environ.get("CLANG_FORMAT") or shutil.which("clang-format")
    if not exe:
        pytest.fail(
            "clang-format is not installed: install it (Debian/Ubuntu: "
            "`apt-get install -y clang-format`) or point CLANG_FORMAT at it",
            pytrace=False,
        )
    return exe


def _sources():
    src = ROOT / "src"
    files = sorted(src.glob("*.c")) + sorted(src.glob("*.h"))
    assert files, f"no C sources found in {src}"
    return files


def test_clang_format_config_exists():
    assert (ROOT / ".clang-format").is_file()


def test_c_sources_are_clang_formatted():
    exe = _clang_format()
    files = _sources()
    proc = subprocess.run(
        [exe, "--dry-run", "-Werror", "--style=file",
         *(str(f.relative_to(ROOT)) for f in files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = proc.stderr or proc.stdout
    assert proc.returncode == 0, (
        "C sources differ from .clang-format (fix with "
        "`clang-format -i src/*.c src/*.h`):\n" + report[:20000]
    )
