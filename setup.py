"""Build aloop._core.

Variants (environment variables read at build time, see STYLE.md):
  ALOOP_DEBUG=1     -O0 -g3, asserts on (ALOOP_DEBUG defined)
  ALOOP_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
"""
import glob
import os

from setuptools import Extension, setup

WARNINGS = [
    "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
    "-Wstrict-prototypes", "-Wshadow", "-Wmissing-prototypes", "-Werror",
    "-fvisibility=hidden",
]


def flags():
    cflags, ldflags, macros = list(WARNINGS), [], [("_GNU_SOURCE", "1")]
    if os.environ.get("ALOOP_DEBUG") == "1":
        cflags += ["-O0", "-g3", "-UNDEBUG"]
        macros.append(("ALOOP_DEBUG", "1"))
    else:
        cflags += ["-O2", "-g"]
    if os.environ.get("ALOOP_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined"]
        cflags += san + ["-O1", "-g"]
        ldflags += san
    return cflags, ldflags, macros


cflags, ldflags, macros = flags()

setup(
    ext_modules=[
        Extension(
            "aloop._core",
            sources=sorted(glob.glob("src/*.c")),
            depends=sorted(glob.glob("src/*.h")),
            include_dirs=["src"],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
