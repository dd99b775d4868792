"""Helpers shared by the networking tests (tests/test_net_*.py).

The tests pin the standard library's networking behaviour (selector
transports, accept loop, sock_* operations) on both loop kinds.  These
helpers deliberately drive the far end of a connection with plain sockets
and `add_reader`/`add_writer` (the loop core), so that a bug in the
transport or sock_* code under test shows up in the test that exercises it
and not in a helper.

Network use is limited to 127.0.0.1, ::1 and Unix sockets under /tmp (one
server test binds the wildcard addresses, as create_server(host=None) does,
but connects through loopback only).
"""

import asyncio
import contextlib
import os
import random
import resource
import shutil
import socket
import ssl
import struct
import sys
import tempfile

from _aloop_support import TIMEOUT, run  # noqa: F401  (re-exported)

import pytest

LOCALHOST4 = "127.0.0.1"
LOCALHOST6 = "::1"

# Enough to be sure a write cannot complete at once on loopback TCP whose
# peer does not read (about 4 MB fit in the kernel buffers on Linux).
BIG = 16 * 1024 * 1024


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def unix_dir():
    """A short directory under /tmp for Unix socket paths (sun_path is
    limited to 108 bytes, pytest's tmp_path can be longer)."""
    d = tempfile.mkdtemp(prefix="aln", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def unix_path(unix_dir):
    return os.path.join(unix_dir, "s")


@contextlib.contextmanager
def nofile_limit(wanted):
    """Raise RLIMIT_NOFILE's soft limit to the hard limit if it is below
    `wanted`; restore it afterwards.  Yields the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- raw sockets


def listener(family=socket.AF_INET, backlog=100):
    host = LOCALHOST6 if family == socket.AF_INET6 else LOCALHOST4
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def tcp_pair(family=socket.AF_INET):
    """Two connected non-blocking TCP sockets on loopback."""
    lsock = listener(family)
    try:
        a = socket.socket(family, socket.SOCK_STREAM)
        a.settimeout(TIMEOUT)
        a.connect(lsock.getsockname()[:2])
        lsock.settimeout(TIMEOUT)
        b, _ = lsock.accept()
    finally:
        lsock.close()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def udp_pair(family=socket.AF_INET):
    """Two non-blocking UDP sockets bound to loopback (not connected)."""
    host = LOCALHOST6 if family == socket.AF_INET6 else LOCALHOST4
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    a.bind((host, 0))
    b.bind((host, 0))
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def free_port(family=socket.AF_INET):
    """A loopback port with nothing listening on it (bound, never listened:
    connecting to it is refused, and nobody else gets it meanwhile)."""
    host = LOCALHOST6 if family == socket.AF_INET6 else LOCALHOST4
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def set_linger_reset(sock):
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))


# ------------------------------------------------------------------ waiting


class Notifier:
    """Something that changes state from loop callbacks and can be awaited
    until a predicate about it holds (bounded in time)."""

    _waiter = None

    def _notify(self):
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, predicate, timeout=TIMEOUT, what=None, poll=None):
        """Wait until predicate() is true, re-checking it whenever this
        object changes (and every `poll` seconds if given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what or predicate} on {self!r}")
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(
                    self._waiter,
                    remaining if poll is None else min(poll, remaining))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiter = None


async def spin(loop, iterations=20, delay=0.0):
    """Let the loop run a bounded number of iterations."""
    for _ in range(iterations):
        await asyncio.sleep(delay)


class RawPeer(Notifier):
    """The far end of a connection: a plain non-blocking socket read with
    add_reader() into `self.data`."""

    def __init__(self, loop, sock, bufsize=1 << 20):
        self.loop = loop
        self.sock = sock
        self.bufsize = bufsize
        self.data = bytearray()
        self.eof = False
        self.error = None
        self.reading = False
        sock.setblocking(False)

    def __repr__(self):
        return (f"<RawPeer received={len(self.data)} eof={self.eof} "
                f"error={self.error!r}>")

    def start_reading(self):
        if not self.reading and not self.eof:
            self.reading = True
            self.loop.add_reader(self.sock.fileno(), self._read_ready)

    def stop_reading(self):
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sock.fileno())

    def _read_ready(self):
        try:
            data = self.sock.recv(self.bufsize)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = exc
            data = b""
        if data:
            self.data += data
        else:
            self.eof = True
            self.stop_reading()
        self._notify()

    async def read_until_eof(self, timeout=TIMEOUT):
        self.start_reading()
        await self.wait(lambda: self.eof, timeout, "EOF")
        return bytes(self.data)

    async def read_at_least(self, n, timeout=TIMEOUT):
        self.start_reading()
        await self.wait(lambda: len(self.data) >= n or self.eof, timeout,
                        f"{n} bytes")
        assert len(self.data) >= n, self
        return bytes(self.data)

    def send(self, data):
        """Send a small amount of data at once (it must fit)."""
        n = self.sock.send(data)
        assert n == len(data), (n, len(data))

    def close(self):
        if self.sock.fileno() != -1:
            self.stop_reading()
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class LifecycleRecorder(Notifier):
    """What every recording protocol (stream or datagram) records the same
    way: connection_made/connection_lost in their contract order, and the
    write buffer size at pause_writing/resume_writing.  Subclasses set
    events, transport, lost_exc, paused_sizes and resumed_sizes."""

    def connection_made(self, transport):
        assert not self.events, self.events
        self.transport = transport
        self.events.append("made")
        self._notify()

    def connection_lost(self, exc):
        assert self.events[:1] == ["made"], self.events
        assert "lost" not in self.events, "connection_lost called twice"
        self.events.append("lost")
        self.lost_exc = exc
        self._notify()

    def pause_writing(self):
        self.paused_sizes.append(self.transport.get_write_buffer_size())
        self.events.append("pause_writing")
        self._notify()

    def resume_writing(self):
        self.resumed_sizes.append(self.transport.get_write_buffer_size())
        self.events.append("resume_writing")
        self._notify()

    @property
    def is_lost(self):
        return "lost" in self.events

    async def wait_lost(self, timeout=TIMEOUT):
        await self.wait(lambda: self.is_lost, timeout, "connection_lost")
        return self.lost_exc


class EchoProtocol(asyncio.Protocol):
    """Writes back everything it receives."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class RecordingProtocol(LifecycleRecorder, asyncio.Protocol):
    """A protocol recording every call it gets, checking the order the
    transport contract promises."""

    def __init__(self, eof_result=None):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.eof_result = eof_result
        self.lost_exc = None
        self.paused_sizes = []   # write buffer size seen in pause_writing
        self.resumed_sizes = []  # ... and in resume_writing
        self.data_while_paused = 0

    def __repr__(self):
        return (f"<RecordingProtocol events={self.events_summary()} "
                f"received={len(self.data)}>")

    def events_summary(self):
        """The events without flow control ones, repeated "data" once."""
        out = []
        for ev in self.events:
            if ev in ("pause_writing", "resume_writing"):
                continue
            if out and ev == "data" and out[-1] == "data":
                continue
            out.append(ev)
        return out

    def data_received(self, data):
        assert isinstance(data, bytes), type(data)
        assert data, "data_received() got empty data"
        assert self.events and self.events[0] == "made", self.events
        assert "eof" not in self.events and "lost" not in self.events, \
            self.events
        if not self.transport.is_reading():
            self.data_while_paused += len(data)
        self.data += data
        self.events.append("data")
        self._notify()

    def eof_received(self):
        assert self.events and self.events[0] == "made", self.events
        assert "eof" not in self.events and "lost" not in self.events, \
            self.events
        self.events.append("eof")
        self._notify()
        return self.eof_result

    async def wait_made(self, timeout=TIMEOUT):
        await self.wait(lambda: "made" in self.events, timeout,
                        "connection_made")

    async def wait_eof(self, timeout=TIMEOUT):
        await self.wait(lambda: "eof" in self.events or self.is_lost,
                        timeout, "eof_received")

    async def wait_bytes(self, n, timeout=TIMEOUT):
        await self.wait(lambda: len(self.data) >= n or self.is_lost,
                        timeout, f"{n} bytes")
        assert len(self.data) >= n, self


# Sizes close to each other, for ReceivedBytes: the third of every three
# is dropped, and the next one is larger (within the same 16-byte malloc
# size class), smaller or the same; also one to three bytes.
RECEIVED_SIZES = [1024, 1024, 1024, 1030, 1024, 1039, 1024, 1030, 1031,
                  1025, 2, 1, 3, 10000, 10000, 10010, 10000, 10015, 10001,
                  1024]


class ReceivedBytes:
    """What a protocol does with the bytes objects it receives, for tests
    of the read path (a loop may reuse the object of a read nobody kept for
    the next one): each object must look freshly made, its hash and size
    those of an equal new object; of every three, the first is kept, the
    second only through a memoryview, the third dropped."""

    def __init__(self):
        self.count, self.kept, self.views = 0, [], []

    def take(self, data):
        assert type(data) is bytes, type(data)
        fresh = bytes(bytearray(data))
        assert hash(data) == hash(fresh)
        assert sys.getsizeof(data) == sys.getsizeof(fresh)
        if self.count % 3 == 0:
            self.kept.append(data)
        elif self.count % 3 == 1:
            self.views.append(memoryview(data))
        self.count += 1

    def check(self, sent):
        """What was kept still holds what was sent."""
        assert self.kept == sent[0::3]
        assert [bytes(v) for v in self.views] == sent[1::3]


async def connect_to_raw_peer(loop, protocol_factory, family=socket.AF_INET,
                              **kwargs):
    """create_connection() to a plain listening socket; return
    (transport, protocol, RawPeer for the accepted end)."""
    lsock = listener(family)
    try:
        host, port = lsock.getsockname()[:2]
        transport, protocol = await loop.create_connection(
            protocol_factory, host, port, **kwargs)
        lsock.settimeout(TIMEOUT)
        conn, _ = lsock.accept()  # already in the accept queue
    finally:
        lsock.close()
    return transport, protocol, RawPeer(loop, conn)


def fill_pattern(n, seed=0):
    """n pseudo-random bytes, deterministic for a seed; every 64 KiB block
    starts with its index, so a lost, duplicated or reordered block changes
    the data (and its checksum)."""
    block = random.Random(seed).randbytes(1 << 16)
    reps, rest = divmod(n, len(block))
    parts = [i.to_bytes(8, "little") + block[8:] for i in range(reps)]
    parts.append(block[:rest])
    return b"".join(parts)


# -------------------------------------------------------------------- TLS
#
# A test CA and a certificate for "localhost", 127.0.0.1 and ::1 issued by
# it (ECDSA P-256, valid 2000-01-01 .. 2125-01-01, extensions that pass
# Python 3.13's VERIFY_X509_STRICT).  Shipped as text so that the tests need
# neither the `openssl` executable nor a PyPI package.  Regenerate with
# `openssl ca -selfsign` / `openssl ca` if ever needed.

TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIBATAKBggqhkjOPQQDAjAuMRYwFAYDVQQDDA1hbG9vcCB0
ZXN0IENBMRQwEgYDVQQKDAthbG9vcCB0ZXN0czAgFw0wMDAxMDEwMDAwMDBaGA8y
MTI1MDEwMTAwMDAwMFowLjEWMBQGA1UEAwwNYWxvb3AgdGVzdCBDQTEUMBIGA1UE
CgwLYWxvb3AgdGVzdHMwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATbRBGrDdCC
lh9xZucN2Pj/lnLcifZ32GyRchsZ5TKPxUgTk0NUZCMYg6XujP51sz768IiNb671
DU2CCJkDz6e4o0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAd
BgNVHQ4EFgQUUIqQbn3iaRK29tCRqKrPSkDSHL8wCgYIKoZIzj0EAwIDSAAwRQIh
ANzRthjCdu4wGNBDrFh8ekGmEdFm/35LqbFksaEpZNpKAiB5Tw0zMIbY0V41JazN
CQWdBj7d2ScCQfwGWR9ikYr0JQ==
-----END CERTIFICATE-----
"""

TEST_CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIB+DCCAZ6gAwIBAgIBAjAKBggqhkjOPQQDAjAuMRYwFAYDVQQDDA1hbG9vcCB0
ZXN0IENBMRQwEgYDVQQKDAthbG9vcCB0ZXN0czAgFw0wMDAxMDEwMDAwMDBaGA8y
MTI1MDEwMTAwMDAwMFowKjESMBAGA1UEAwwJbG9jYWxob3N0MRQwEgYDVQQKDAth
bG9vcCB0ZXN0czBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABCT+G8GhRQ6Bs+0T
IREkIzGY5ACHbnZyg1a6auFNZ/NGAgcPi0zG4nWOvnkBXOJMLDJxCkkT0p4yL6RS
ndOp3xejga4wgaswDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCBaAwHQYDVR0l
BBYwFAYIKwYBBQUHAwEGCCsGAQUFBwMCMCwGA1UdEQQlMCOCCWxvY2FsaG9zdIcE
fwAAAYcQAAAAAAAAAAAAAAAAAAAAATAdBgNVHQ4EFgQURCZKPwRFFlnE2wH0bCkk
CdM0PzAwHwYDVR0jBBgwFoAUUIqQbn3iaRK29tCRqKrPSkDSHL8wCgYIKoZIzj0E
AwIDSAAwRQIhAMSai1TyOCIIoY5K8zlrl0i7RUeoZmaC994rLUgGAXFoAiAj/Lao
1wTcNCk4RVqa67+wvN8freWg5nYFwlI+ur++pw==
-----END CERTIFICATE-----
"""

TEST_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwfvzRI4f7lAOcDSW
DJQsFI2K81YdtbGeF72wjk9QcrWhRANCAAQk/hvBoUUOgbPtEyERJCMxmOQAh252
coNWumrhTWfzRgIHD4tMxuJ1jr55AVziTCwycQpJE9KeMi+kUp3Tqd8X
-----END PRIVATE KEY-----
"""


def server_ssl_context(directory):
    """A server-side SSLContext with the test certificate (load_cert_chain
    needs files: they are written to `directory`)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    with open(cert, "w") as f:
        f.write(TEST_CERT_PEM)
    with open(key, "w") as f:
        f.write(TEST_KEY_PEM)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def client_ssl_context():
    """A client-side SSLContext trusting the test CA, with the defaults of
    ssl.create_default_context() (hostname check, strict on 3.13)."""
    return ssl.create_default_context(cadata=TEST_CA_PEM)
