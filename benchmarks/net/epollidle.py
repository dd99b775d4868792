"""What a c1 cell measures: epollidle.c's four epoll patterns at c1.

    python -m benchmarks.net.epollidle [--rounds 3] [--duration 2]

Each round runs every mode in a fresh server process pinned to CPU 0, with
loadgen (1 connection, 1 KiB echo) pinned to CPU 1, modes alternating, and
prints the medians: server CPU per request and requests per second.  On a
KVM guest the add-del pattern is the cheapest and the fastest although it
makes two more system calls per request than oneshot, and oneshot+churn
(oneshot plus a useless add and delete of an unrelated eventfd) gets most of
that back: at c1 the cost of a request depends on how the idle CPU sleeps
and wakes, not only on the work done (benchmarks/README.md).
"""

import argparse
import json
import statistics
import subprocess

from benchmarks.net import cbuild
from benchmarks.net.harness import (CLIENT_CPU, SERVER_CPU, can_pin,
                                    pinned)

MODES = ("add-del", "oneshot", "persistent", "oneshot+churn")


def run_one(server_exe, loadgen, mode, duration):
    pin = can_pin()
    srv = subprocess.Popen([str(server_exe), mode], stdout=subprocess.PIPE,
                           text=True, preexec_fn=pinned(SERVER_CPU, pin))
    try:
        port = json.loads(srv.stdout.readline())["port"]
        client = subprocess.run(
            [str(loadgen), "--tcp", f"127.0.0.1:{port}", "--mode", "echo",
             "--conns", "1", "--size", "1024", "--duration", str(duration)],
            capture_output=True, text=True, timeout=duration + 30,
            preexec_fn=pinned(CLIENT_CPU, pin), check=True)
        result = json.loads(srv.stdout.readline())
    finally:
        srv.kill()
        srv.wait()
    done = json.loads(client.stdout.splitlines()[-1])
    return result["cpu_us"], done["requests"] / duration


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    server_exe, loadgen = cbuild.build("epollidle"), cbuild.build("loadgen")
    results = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(run_one(server_exe, loadgen, mode,
                                         args.duration))
    print(f"{'mode':<14} {'us/req':>7} {'rps':>8}")
    for mode, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        rps = statistics.median(r[1] for r in runs)
        print(f"{mode:<14} {cpu:7.2f} {rps:8.0f}")


if __name__ == "__main__":
    main()
