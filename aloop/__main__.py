"""python -m aloop: run an unmodified asyncio program on aloop.

    python -m aloop script.py [args...]
    python -m aloop -m module [args...]

aloop's EventLoopPolicy is installed first, so asyncio.run(),
asyncio.new_event_loop() and asyncio.get_event_loop() in the program all
give aloop loops.  The program then runs as `python script.py` would run
it: as __main__, with sys.argv[0] its path and the rest its arguments.
"""
import os
import runpy
import sys

import aloop

USAGE = """\
usage: python -m aloop [-h] [--version] (script.py | -m module) [args...]

Run an asyncio program with aloop as its event loop.

  script.py     run a script, as `python script.py args...` would
  -m module     run a library module as a script, as `python -m module`
  -h, --help    show this help and exit
  --version     print aloop's version and exit
"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        stream = sys.stdout if argv else sys.stderr
        stream.write(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"aloop {aloop.__version__}")
        return 0
    aloop.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            sys.stderr.write("python -m aloop: -m needs a module name\n")
            return 2
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        if argv[0].startswith("-"):
            sys.stderr.write(f"python -m aloop: unknown option {argv[0]}\n"
                             + USAGE)
            return 2
        sys.argv = argv
        # As `python script.py`: the script's directory replaces the cwd
        # entry `python -m` put first (run_path handles dirs and zips).
        if os.path.isfile(argv[0]):
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
