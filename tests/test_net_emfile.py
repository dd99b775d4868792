"""Running out of file descriptors while accepting (EMFILE).

The standard library's accept loop reports the error through the exception
handler ('socket.accept() out of system resource'), stops accepting for
ACCEPT_RETRY_DELAY (1 s), keeps serving the connections it has, and
accepts the waiting ones once descriptors are free again.

Runs in a child process whose RLIMIT_NOFILE is lowered.
"""

import json

from _aloop_support import describe, run_child

CHILD = r"""
import errno, json, resource, socket

N_CLIENTS = 10       # more clients than free descriptors
FREE = 6             # descriptors left free for accepted connections

records = []

def handler(loop, context):
    exc = context.get("exception")
    records.append({
        "message": context.get("message"),
        "errno": getattr(exc, "errno", None),
        "exc_type": type(exc).__name__,
        "socket_fd": context["socket"].fileno() if "socket" in context
                     else None,
    })
    if not emfile_seen.done():
        emfile_seen.set_result(None)

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        stats["accepted"] += 1

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        stats["lost"] += 1

stats = {"accepted": 0, "lost": 0}

def fd_is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

async def client(loop, i, sock):
    # Each client: ping, wait until EMFILE has been reported, ping again
    # (the connections accepted before the error keep being served),
    # then close, which frees a descriptor in the server.
    await loop.sock_sendall(sock, b"ping1 %d;" % i)
    got = b""
    while len(got) < len(b"ping1 %d;" % i):
        chunk = await loop.sock_recv(sock, 100)
        assert chunk, "EOF"
        got += chunk
    assert got == b"ping1 %d;" % i, got
    await emfile_seen
    await loop.sock_sendall(sock, b"ping2 %d;" % i)
    got = b""
    while len(got) < len(b"ping2 %d;" % i):
        chunk = await loop.sock_recv(sock, 100)
        assert chunk, "EOF"
        got += chunk
    assert got == b"ping2 %d;" % i, got
    sock.close()
    return i

async def main():
    global emfile_seen
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(handler)
    emfile_seen = loop.create_future()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=100)
    addr = server.sockets[0].getsockname()
    listen_fd = server.sockets[0].fileno()

    # Connect every client first: the kernel queues them (nobody accepts
    # while this coroutine does not yield).
    socks = []
    for _ in range(N_CLIENTS):
        s = socket.create_connection(addr, timeout=10)
        s.setblocking(False)
        socks.append(s)
    # Leave FREE descriptor numbers free below the new soft limit (counting
    # the holes below the highest open descriptor).
    open_fds = set(int(fd) for fd in os.listdir("/proc/self/fd"))
    open_fds = set(fd for fd in open_fds if fd_is_open(fd))
    top = max(open_fds) + 1
    holes = top - len(open_fds)
    limit = top + max(0, FREE - holes)
    assert limit - len(open_fds) < N_CLIENTS, (limit, open_fds)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    tasks = [asyncio.ensure_future(client(loop, i, s))
             for i, s in enumerate(socks)]
    done = await asyncio.wait_for(asyncio.gather(*tasks), 40)
    assert sorted(done) == list(range(N_CLIENTS))
    # Every client was eventually accepted and served.
    assert stats["accepted"] == N_CLIENTS, stats

    server.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await asyncio.wait_for(server.wait_closed(), 30)
    print(json.dumps({"records": records, "stats": stats,
                      "clients": N_CLIENTS, "listen_fd": listen_fd}))

loop = new_loop()
try:
    loop.run_until_complete(main())
finally:
    loop.close()
"""


def check_child(kind):
    proc = run_child(kind, CHILD)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    records = out["records"]
    assert records, describe(proc)
    for rec in records:
        assert rec["message"] == "socket.accept() out of system resource", \
            describe(proc)
        assert rec["errno"] == 24, describe(proc)  # EMFILE
        assert rec["exc_type"] == "OSError", describe(proc)
        # 'socket' is the listening socket
        assert rec["socket_fd"] == out["listen_fd"], describe(proc)
    assert out["stats"]["accepted"] == out["clients"]
    return out


def test_emfile_reported_and_accepting_resumes(loop_kind):
    check_child(loop_kind)
