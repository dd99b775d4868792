"""One measurement: a server process, a warm-up, a timed client, the
server's CPU time.

``measure(spec)`` does, with every step bounded by a timeout:

1. start the server (servers.py or rawecho) in a new session, pinned to
   SERVER_CPU, and wait for its ``{"event": "ready"}`` line;
2. warm up *and check*: loadgen ``--verify`` (every echoed byte compared)
   for echo, churn and udp (where a lost or late datagram is an error too:
   with one datagram in flight per flow, loopback loses none), or a few
   requests, sequential and pipelined, whose responses are compared byte
   for byte, for http;
3. SIGUSR1: the server takes a getrusage mark and answers ``mark``;
4. the timed client (loadgen, or wrk for http) pinned to CLIENT_CPU;
5. SIGTERM: the server prints its user+sys CPU seconds since the mark.

Noise check: /proc/stat is read around the timed client, and the busy time
of the benchmark's CPUs (0 and 1, or all when not pinned) that is neither
the server's nor the client's is reported as ``others_cpu`` (in CPUs, e.g.
0.3 = 30% of one CPU): other processes, kernel threads, the hypervisor's
steal.  A few percent is normal; much more means the run was disturbed.

The server's CPU per request is that CPU time divided by every request it
served after the mark (loadgen's counted plus drained requests, plus, for
udp, the late echoes of datagrams given up as lost; wrk's total).
Whatever happens, the server's process group is killed on the way out.
Failures raise MeasureError with a one-line reason and the tail of the
server's stderr.
"""

import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.net import servers

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1
READY_TIMEOUT = 20.0      # server start (imports, listen)
CONTROL_TIMEOUT = 5.0     # mark / exit answers, process exit
STALL_TIMEOUT = 5.0       # loadgen --timeout: no progress, drain at the end
HTTP_WARMUP_REQUESTS = 200
UDP_LOSS_TIMEOUT = 0.2    # loadgen --loss-timeout: a datagram is lost, resend


class MeasureError(Exception):
    pass


@dataclass
class RunSpec:
    kind: str             # "echo", "churn", "http" or "udp"
    server_cmd: list      # argv of the server, without --port/--unix
    transport: str        # "tcp", "unix" or "udp"
    conc: int             # connections (udp: flows)
    size: int             # message size (echo, churn, udp); unused for http
    duration: float
    warmup: float
    unix_path: str        # used when transport == "unix"
    loadgen: str = None   # path of the loadgen executable
    pin: bool = True


def pinned(cpu, enabled):
    """preexec_fn for Popen: pin the child to one CPU."""
    if not enabled:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def can_pin():
    try:
        return {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return False


class Server:
    """A server process in its own session (so its process group can be
    killed), speaking the ready/mark/exit line protocol on stdout."""

    def __init__(self, cmd, pin):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.stderr, start_new_session=True,
            preexec_fn=pinned(SERVER_CPU, pin),
            env=dict(os.environ, PYTHONHASHSEED="0"))
        self.buf = b""

    def read_event(self, want, timeout):
        """Wait for the JSON line {"event": want, ...}, at most timeout s."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == want:
                    return msg
            left = end - time.monotonic()
            if left <= 0:
                raise self.error(
                    f"no {want!r} from the server in {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise self.error(f"server exited before {want!r}")
                self.buf += chunk

    def signal(self, sig):
        if self.proc.poll() is not None:
            raise self.error(f"server died (exit {self.proc.returncode})")
        self.proc.send_signal(sig)

    def error(self, reason):
        self.proc.poll()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()
        if tail:
            reason += " | server stderr: " + " / ".join(tail[-3:])
        return MeasureError(reason)

    def stop(self):
        """SIGTERM, collect the exit report, reap the process."""
        self.signal(signal.SIGTERM)
        report = self.read_event("exit", CONTROL_TIMEOUT)
        try:
            self.proc.wait(CONTROL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        return report

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


def server_address(spec, ready):
    if spec.transport == "unix":
        return spec.unix_path
    return ("127.0.0.1", ready["port"])


# ---- clients ---------------------------------------------------------------

def run_client(cmd, timeout, pin, what):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              preexec_fn=pinned(CLIENT_CPU, pin))
    except subprocess.TimeoutExpired:
        raise MeasureError(f"{what} killed after {timeout:g} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        err = lines[-1] if lines else f"exit {proc.returncode}"
        raise MeasureError(err if err.startswith(what) else f"{what}: {err}")
    return proc.stdout


def run_loadgen(spec, addr, duration, verify):
    if spec.transport == "unix":
        target = ["--unix", addr]
    else:
        target = [f"--{spec.transport}", f"{addr[0]}:{addr[1]}"]
    cmd = [spec.loadgen, *target, "--mode", spec.kind,
           "--conns", str(spec.conc), "--size", str(spec.size),
           "--duration", str(duration), "--timeout", str(STALL_TIMEOUT)]
    if spec.kind == "udp":
        cmd += ["--loss-timeout", str(UDP_LOSS_TIMEOUT)]
    if verify:
        cmd.append("--verify")
    out = run_client(cmd, duration + 3 * STALL_TIMEOUT + 10, spec.pin,
                     "loadgen")
    res = json.loads(out.strip().splitlines()[-1])
    out = {"requests": res["requests"],
           "served": res["requests"] + res["drained"] + res["late"],
           "seconds": res["seconds"], "rps": res["rps"],
           "p50_us": res["p50_us"], "p99_us": res["p99_us"], "client": res}
    if spec.kind == "udp":
        out.update(losses=res["losses"], late=res["late"])
        if verify and (res["losses"] or res["late"]):
            raise MeasureError(
                f"loadgen: {res['losses']} datagram(s) lost, {res['late']} "
                f"echoed late (after {UDP_LOSS_TIMEOUT * 1e3:g} ms), in "
                f"{res['requests'] + res['drained']} round trips")
    return out


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _wrk_latency(text, pct):
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    return float(m.group(1)) * _UNITS_US[m.group(2)] if m else None


def parse_wrk(text):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not (m and rps):
        raise MeasureError(f"cannot parse wrk output: {text[-300:]!r}")
    errors = re.search(r"Socket errors:.*|Non-2xx or 3xx responses:.*", text)
    if errors:
        raise MeasureError(f"wrk: {errors.group(0).strip()}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * _UNITS_US[m.group(3)] / 1e6
    return {"requests": requests, "served": requests, "seconds": seconds,
            "rps": float(rps.group(1)), "p50_us": _wrk_latency(text, 50),
            "p99_us": _wrk_latency(text, 99), "client": {"wrk": text}}


def run_wrk(spec, addr, duration):
    secs = max(1, round(duration))  # wrk takes whole seconds
    cmd = ["wrk", "-t1", f"-c{spec.conc}", f"-d{secs}s", "--latency",
           f"http://{addr[0]}:{addr[1]}/"]
    return parse_wrk(run_client(cmd, secs + 15, spec.pin, "wrk"))


def http_warmup(addr, n=HTTP_WARMUP_REQUESTS):
    """n sequential requests, then 3 pipelined in one send, on one
    keep-alive connection; every response must be servers.HTTP_RESPONSE."""
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    want = servers.HTTP_RESPONSE

    def read_exact(sock, size):
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise MeasureError(
                    "http warm-up: server closed the connection")
            data += chunk
        return data

    with socket.create_connection(addr, timeout=CONTROL_TIMEOUT) as sock:
        for i in range(n):
            sock.sendall(req)
            got = read_exact(sock, len(want))
            if got != want:
                raise MeasureError(f"http warm-up: bad response {got[:80]!r}")
        sock.sendall(req * 3)
        if read_exact(sock, 3 * len(want)) != want * 3:
            raise MeasureError("http warm-up: bad pipelined responses")


# ---- one measurement -------------------------------------------------------

def busy_seconds(cpus):
    """Non-idle time (user nice system irq softirq steal) of the given CPUs
    (None: all) from /proc/stat, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu"):
                break
            if (cpus is None and name == "cpu") or \
                    (cpus is not None and name[3:] in {str(c) for c in cpus}):
                v = [int(x) for x in fields[:8]]
                total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total / ticks


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(spec):
    """Run one measurement; return a dict (rps, cpu, cpu_us_per_request,
    latencies, the client's and the server's reports)."""
    where = ["--unix", spec.unix_path] if spec.transport == "unix" else \
            ["--port", "0"]
    lifetime = int(spec.duration + spec.warmup + READY_TIMEOUT + 60)
    server = Server([*spec.server_cmd, *where, "--lifetime", str(lifetime)],
                    spec.pin)
    try:
        ready = server.read_event("ready", READY_TIMEOUT)
        addr = server_address(spec, ready)
        try:
            if spec.kind == "http":
                http_warmup(addr)
            else:
                run_loadgen(spec, addr, spec.warmup, verify=True)
        except (MeasureError, OSError) as exc:
            raise server.error(f"warm-up: {exc}") from None
        server.signal(signal.SIGUSR1)
        server.read_event("mark", CONTROL_TIMEOUT)
        cpus = (SERVER_CPU, CLIENT_CPU) if spec.pin else None
        busy0, client0 = busy_seconds(cpus), children_cpu()
        try:
            if spec.kind == "http":
                res = run_wrk(spec, addr, spec.duration)
            else:
                res = run_loadgen(spec, addr, spec.duration, verify=False)
        except MeasureError as exc:
            raise server.error(str(exc)) from None
        busy1, client1 = busy_seconds(cpus), children_cpu()
        report = server.stop()
    finally:
        server.kill()
    if res["served"] <= 0:
        raise MeasureError("no request was served")
    cpu, secs = report["cpu"], res["seconds"]
    client_cpu = client1 - client0
    others = busy1 - busy0 - cpu - client_cpu
    return dict(res, cpu=cpu, cpu_user=report["user"], cpu_sys=report["sys"],
                cpu_us_per_request=cpu / res["served"] * 1e6,
                server_util=cpu / secs if secs else None,
                client_cpu=client_cpu,
                client_util=client_cpu / secs if secs else None,
                others_cpu=max(0.0, others) / secs if secs else None,
                server=report)


if __name__ == "__main__":
    sys.exit("this module is used by benchmarks.net.run")
