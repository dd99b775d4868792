"""aloop's C objects are all freed: the live-object counters of the C core
(handles, timer handles, loops) return to their starting values once the
loops are closed and collected.  aloop-only: stock asyncio has no C objects
to count (its behaviour is covered by the parametrized tests)."""
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import asyncio, gc, os, signal, socket
    import aloop
    from aloop import _core

    def churn():
        loop = aloop.new_event_loop()
        a, b = socket.socketpair()
        loop.call_soon(lambda: None)
        loop.call_later(10, lambda: None).cancel()
        keep = loop.call_later(3600, lambda: None)       # never fires
        loop.add_reader(a, lambda: None)
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        ts = [loop.call_later(100 + i, print) for i in range(300)]
        for t in ts[:250]:
            t.cancel()
        loop.call_soon_threadsafe(lambda: None)
        loop.run_until_complete(asyncio.sleep(0.001))
        loop.remove_reader(a)
        loop.close()
        a.close(); b.close()

    churn(); gc.collect()
    start = _core._live_objects()
    for _ in range(20):
        churn()
    gc.collect()
    end = _core._live_objects()
    print(start, end)
    assert end == start, (start, end)
    assert end["loops"] == 0, end
""")


def test_live_objects_return_to_start():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
