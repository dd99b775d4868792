"""Run CPython's own test.test_asyncio suite with aloop as the event loop.

    python -m tests.cpython [--modules test_events,...] [-j N] [--table]

See __main__.py (command line, scheduling, report), _child.py (one module
in a subprocess) and _substitute.py (how aloop replaces asyncio's loop).
"""
