"""Datagram endpoints: loop.create_datagram_endpoint() and the datagram
transport, as the standard library's _SelectorDatagramTransport and
BaseEventLoop.create_datagram_endpoint implement them (3.11 to 3.13).

UDP over 127.0.0.1 and ::1, and Unix datagram sockets under /tmp.  The far
end is, where it matters, a plain socket driven with add_reader() (RawDgram)
so that only the transport under test is exercised.

Differences between Python versions, pinned per version:
- 3.11's _SelectorDatagramTransport is not a DatagramTransport subclass.
- 3.13 sends empty datagrams (gh-113812); before, sendto(b'') is a no-op
  (returning before the address check).
- 3.13 counts 8 header bytes per buffered datagram in
  get_write_buffer_size(); 3.13.0 forgets to subtract them when the
  datagram is finally sent (gh-135444), which only the standard library's
  own transport class is allowed to do here.
- 3.13 rejects only SOCK_STREAM sockets for sock= ('A datagram socket was
  expected'); 3.11/3.12 reject anything but SOCK_DGRAM ('A UDP Socket was
  expected').
"""

import array
import asyncio
import errno
import gc
import logging
import os
import socket
import sys
import warnings
from asyncio import selector_events

import pytest

from _aloop_support import describe, run_child
from _net_support import (LOCALHOST4, LOCALHOST6, RECEIVED_SIZES, TIMEOUT,
                          LifecycleRecorder, Notifier, ReceivedBytes, run,
                          spin, unix_dir, unix_path)  # noqa: F401 (fixtures)

FAMILIES = ["udp4", "udp6", "unix"]

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)

# Bytes get_write_buffer_size() counts per buffered datagram on top of its
# payload.
HEADER = 8 if PY313 else 0

STDLIB_TRANSPORT = selector_events._SelectorDatagramTransport

# 3.13.0 (until the gh-135444 fix, which introduced _header_size) adds
# len(data) + 8 when buffering but subtracts only len(data) when sending.
STDLIB_LEAKS_HEADER = PY313 and not hasattr(STDLIB_TRANSPORT, "_header_size")


def drained_size(tr, nbuffered):
    """get_write_buffer_size() once `nbuffered` buffered datagrams were all
    sent: 0, except for the standard library's own 3.13.0 transport."""
    if STDLIB_LEAKS_HEADER and type(tr) is STDLIB_TRANSPORT:
        return 8 * nbuffered
    return 0


# ---------------------------------------------------------------- helpers


class DgramProto(LifecycleRecorder, asyncio.DatagramProtocol):
    """A datagram protocol recording every call, checking the order the
    transport contract promises.  With echo=True it sends every datagram
    back to where it came from."""

    def __init__(self, echo=False):
        self.echo = echo
        self.transport = None
        self.events = []          # "made", "error", "lost", flow control
        self.datagrams = []       # (data, addr)
        self.errors = []
        self.lost_exc = None
        self.paused_sizes = []    # get_write_buffer_size() in pause_writing
        self.resumed_sizes = []   # ... and in resume_writing

    def __repr__(self):
        return (f"<DgramProto events={self.events} "
                f"datagrams={len(self.datagrams)} errors={self.errors!r}>")

    def datagram_received(self, data, addr):
        assert type(data) is bytes, type(data)
        assert self.events[:1] == ["made"], self.events
        assert "lost" not in self.events, self.events
        self.datagrams.append((data, addr))
        if self.echo:
            self.transport.sendto(data, addr)
        self._notify()

    def error_received(self, exc):
        assert self.events[:1] == ["made"], self.events
        assert "lost" not in self.events, self.events
        self.errors.append(exc)
        self.events.append("error")
        self._notify()

    @property
    def data(self):
        return [d for d, _ in self.datagrams]

    async def wait_datagrams(self, n, timeout=TIMEOUT):
        await self.wait(lambda: len(self.datagrams) >= n or self.is_lost,
                        timeout, f"{n} datagrams")
        assert len(self.datagrams) >= n, self

    async def wait_error(self, timeout=TIMEOUT):
        await self.wait(lambda: self.errors or self.is_lost, timeout,
                        "error_received")
        assert self.errors, self
        return self.errors[0]



class RawDgram(Notifier):
    """A plain non-blocking datagram socket read with add_reader() into
    `self.received` ((data, addr) pairs)."""

    def __init__(self, loop, sock):
        self.loop = loop
        self.sock = sock
        self.received = []
        self.errors = []
        self.reading = False
        sock.setblocking(False)

    def __repr__(self):
        return (f"<RawDgram received={len(self.received)} "
                f"errors={self.errors!r}>")

    @property
    def addr(self):
        return self.sock.getsockname()

    @property
    def data(self):
        return [d for d, _ in self.received]

    def start_reading(self):
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.sock.fileno(), self._read_ready)

    def stop_reading(self):
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sock.fileno())

    def _read_ready(self):
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(1 << 18)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.errors.append(exc)
                break
            self.received.append((data, addr))
        self._notify()

    async def wait_count(self, n, timeout=TIMEOUT):
        self.start_reading()
        await self.wait(lambda: len(self.received) >= n, timeout,
                        f"{n} datagrams")

    def sendto(self, data, addr):
        assert self.sock.sendto(data, addr) == len(data)

    def close(self):
        if self.sock.fileno() != -1:
            self.stop_reading()
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def host_of(family):
    return LOCALHOST6 if family == "udp6" else LOCALHOST4


def af_of(family):
    return {"udp4": socket.AF_INET, "udp6": socket.AF_INET6,
            "unix": socket.AF_UNIX}[family]


def bound_socket(family, unix_dir, name="raw"):
    """A plain datagram socket bound to loopback (or to a path)."""
    sock = socket.socket(af_of(family), socket.SOCK_DGRAM)
    if family == "unix":
        sock.bind(os.path.join(unix_dir, name))
    else:
        sock.bind((host_of(family), 0))
    return sock


def local_kwargs(family, unix_dir, name="ep"):
    """create_datagram_endpoint() keywords binding to loopback / a path."""
    if family == "unix":
        return dict(family=socket.AF_UNIX,
                    local_addr=os.path.join(unix_dir, name))
    return dict(local_addr=(host_of(family), 0))


def remote_arg(family, addr):
    """The remote_addr argument for a sockname (a 2-tuple for IP)."""
    return addr if family == "unix" else tuple(addr[:2])


def resolved(family, addr):
    """The address the standard library stores for remote_addr=addr (what
    getaddrinfo gives: a 4-tuple for IPv6)."""
    if family == "udp6":
        return (addr[0], addr[1], 0, 0)
    if family == "udp4":
        return tuple(addr[:2])
    return addr


async def endpoint(loop, factory=DgramProto, **kwargs):
    tr, proto = await loop.create_datagram_endpoint(factory, **kwargs)
    assert proto.transport is tr
    assert proto.events == ["made"], proto.events
    return tr, proto


async def wait_briefly(notifier, predicate, timeout):
    """Wait up to `timeout` for predicate(); return whether it holds."""
    try:
        await notifier.wait(predicate, timeout)
    except AssertionError:
        pass
    return bool(predicate())


async def close_and_wait(tr, proto):
    tr.close()
    assert await proto.wait_lost() is None


def payload(i, size=64):
    """Datagram number i: its index then a pattern depending on it."""
    head = i.to_bytes(4, "big")
    return head + bytes((i + k) & 0xFF for k in range(size - 4))


# ----------------------------------------------------------------- identity


@pytest.mark.skipif(not PY312, reason="3.11's _SelectorDatagramTransport "
                    "does not subclass asyncio.DatagramTransport")
def test_transport_is_a_datagram_transport(loop):
    async def main():
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
        assert isinstance(tr, asyncio.DatagramTransport)
        assert isinstance(tr, asyncio.BaseTransport)
        await close_and_wait(tr, proto)

    run(loop, main())


def test_transport_is_a_base_transport(loop):
    async def main():
        calls = []

        def factory():
            calls.append(1)
            return DgramProto()

        tr, proto = await loop.create_datagram_endpoint(
            factory, local_addr=(LOCALHOST4, 0))
        # connection_made() was called before the coroutine returned.
        assert calls == [1]
        assert proto.events == ["made"]
        assert proto.transport is tr
        assert tr.get_protocol() is proto
        assert isinstance(tr, asyncio.BaseTransport)
        assert not tr.is_closing()
        await close_and_wait(tr, proto)
        assert tr.is_closing()

    run(loop, main())


# --------------------------------------------------------------------- echo


@pytest.mark.parametrize("mode", ["connected", "unconnected", "sock"])
@pytest.mark.parametrize("family", FAMILIES)
def test_echo(loop, family, mode, unix_dir):
    messages = [b"a", b"hello world", bytes(range(256)) * 40,
                bytearray(b"from a bytearray"), memoryview(b"from a view")]

    async def main():
        server_tr, server = await endpoint(
            loop, lambda: DgramProto(echo=True),
            **local_kwargs(family, unix_dir, "srv"))
        saddr = server_tr.get_extra_info("sockname")

        if mode == "connected":
            kw = dict(remote_addr=remote_arg(family, saddr))
            if family == "unix":
                # An unbound Unix client could not get the echo back.
                kw.update(family=socket.AF_UNIX,
                          local_addr=os.path.join(unix_dir, "cli"))
        elif mode == "unconnected":
            kw = local_kwargs(family, unix_dir, "cli")
        else:
            kw = dict(sock=bound_socket(family, unix_dir, "cli"))
        tr, proto = await endpoint(loop, **kw)
        caddr = tr.get_extra_info("sockname")
        assert caddr == tr.get_extra_info("socket").getsockname()

        for msg in messages:
            if mode == "connected":
                tr.sendto(msg)
            else:
                tr.sendto(msg, saddr)
        await proto.wait_datagrams(len(messages))
        expected = [bytes(m) for m in messages]
        # Loopback and Unix datagram sockets keep the order.
        assert server.data == expected
        assert proto.data == expected
        assert [a for _, a in server.datagrams] == [caddr] * len(messages)
        assert [a for _, a in proto.datagrams] == [saddr] * len(messages)
        assert proto.errors == [] and server.errors == []

        await close_and_wait(tr, proto)
        await close_and_wait(server_tr, server)
        assert proto.events == ["made", "lost"]
        assert server.events == ["made", "lost"]

    run(loop, main())


@pytest.mark.parametrize("family", ["udp4", "unix"])
def test_large_datagrams(loop, family, unix_dir):
    # The largest UDP/IPv4 payload; for Unix sockets, more than 64 KiB (the
    # standard library reads up to 256 KiB at a time).
    size = 65507 if family == "udp4" else 200_000

    async def main():
        tr, proto = await endpoint(loop, **local_kwargs(family, unix_dir))
        with RawDgram(loop, bound_socket(family, unix_dir)) as peer:
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                 1 << 20)
            addr = tr.get_extra_info("sockname")
            big = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
            peer.sendto(big, addr)
            await proto.wait_datagrams(1)
            assert proto.data == [big]
            # ... and back through sendto().
            tr.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            tr.sendto(big[::-1], peer.addr)
            await peer.wait_count(1)
            assert peer.data == [big[::-1]]
        await close_and_wait(tr, proto)

    run(loop, main())


# ------------------------------------------------------- 10,000 datagrams

COUNT = 10_000


class Pinger(asyncio.DatagramProtocol):
    """Keeps `window` numbered requests in flight until `total` echoes came
    back; a datagram is never lost by the kernel with so few in flight on
    loopback."""

    def __init__(self, total, window, done):
        self.total = total
        self.window = window
        self.done = done
        self.sent = 0
        self.seen = set()
        self.received = 0
        self.bad = []
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport

    def start(self):
        for _ in range(self.window):
            self._send_next()

    def _send_next(self):
        if self.sent < self.total:
            self.transport.sendto(payload(self.sent))
            self.sent += 1

    def datagram_received(self, data, addr):
        self.received += 1
        seq = int.from_bytes(data[:4], "big")
        if data != payload(seq) or seq in self.seen:
            self.bad.append(data)
        self.seen.add(seq)
        self._send_next()
        if self.received == self.total and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        self.errors.append(exc)


class Counter(asyncio.DatagramProtocol, Notifier):
    def __init__(self, echo=False):
        self.echo = echo
        self.data = []
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.data.append(data)
        if self.echo:
            self.transport.sendto(data, addr)
        self._notify()

    def error_received(self, exc):
        self.errors.append(exc)


def test_10000_udp_datagrams_request_response(loop):
    """10,000 datagrams through both transports, a window of 32 in flight:
    every one arrives, exactly once, intact."""
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            lambda: Counter(echo=True), local_addr=(LOCALHOST4, 0))
        saddr = server_tr.get_extra_info("sockname")
        done = loop.create_future()
        tr, pinger = await loop.create_datagram_endpoint(
            lambda: Pinger(COUNT, 32, done), remote_addr=saddr)
        pinger.start()
        await asyncio.wait_for(done, TIMEOUT)
        assert pinger.sent == COUNT
        assert pinger.received == COUNT
        assert pinger.seen == set(range(COUNT))
        assert pinger.bad == []
        assert len(server.data) == COUNT
        assert sorted(server.data) == [payload(i) for i in range(COUNT)]
        assert pinger.errors == [] and server.errors == []
        tr.close()
        server_tr.close()
        await spin(loop)

    run(loop, main())


def test_10000_unix_datagrams_burst(loop, unix_dir):
    """10,000 datagrams sent at once on a connected Unix datagram socket:
    the kernel never drops them (it makes the sender wait), so the
    transport must buffer them and deliver every one, in order."""
    async def main():
        path = os.path.join(unix_dir, "srv")
        server_tr, server = await loop.create_datagram_endpoint(
            Counter, family=socket.AF_UNIX, local_addr=path)
        tr, proto = await endpoint(loop, family=socket.AF_UNIX,
                                   remote_addr=path)
        sent = [payload(i, 100) for i in range(COUNT)]
        for data in sent:
            tr.sendto(data)
        # Most of it is waiting in the transport.
        assert tr.get_write_buffer_size() > 0
        assert proto.paused_sizes and proto.paused_sizes[0] > 64 * 1024
        await server.wait(lambda: len(server.data) >= COUNT,
                          what=f"{COUNT} datagrams")
        assert len(server.data) == COUNT
        assert server.data == sent
        # The last datagram was sent (and resume_writing() called) before
        # the server could read it.
        assert proto.events.count("pause_writing") == 1
        if drained_size(tr, 1) == 0:
            assert tr.get_write_buffer_size() == 0
            # (3.13.0's own transport never gets back below the low-water
            # mark: gh-135444.)
            assert proto.events.count("resume_writing") == 1
            assert proto.resumed_sizes[0] <= 16 * 1024
        assert proto.errors == [] and server.errors == []
        await close_and_wait(tr, proto)
        server_tr.close()
        await spin(loop)

    run(loop, main())


# --------------------------------------------------- addresses, empty data


@pytest.mark.parametrize("family", ["udp4", "udp6", "unix", "unix-unbound"])
def test_datagram_received_address_formats(loop, family, unix_dir):
    async def main():
        fam = "unix" if family.startswith("unix") else family
        tr, proto = await endpoint(loop, **local_kwargs(fam, unix_dir))
        taddr = tr.get_extra_info("sockname")
        if family == "unix-unbound":
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # What recvfrom() gives for an unbound sender, on this kernel.
            ref = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            with ref:
                ref.bind(os.path.join(unix_dir, "ref"))
                ref.settimeout(TIMEOUT)
                sender.sendto(b"ref", os.path.join(unix_dir, "ref"))
                data, expected = ref.recvfrom(100)
                assert data == b"ref"
            assert expected in (None, ""), expected
        else:
            sender = bound_socket(fam, unix_dir, "snd")
            expected = sender.getsockname()
        with RawDgram(loop, sender) as peer:
            peer.sendto(b"where from", taddr)
            await proto.wait_datagrams(1)
        [(data, addr)] = proto.datagrams
        assert data == b"where from"
        assert addr == expected
        if family == "udp4":
            assert type(addr) is tuple and len(addr) == 2
            assert addr[0] == LOCALHOST4 and addr[1] > 0
            assert taddr == (LOCALHOST4, taddr[1])
        elif family == "udp6":
            assert type(addr) is tuple and len(addr) == 4
            assert addr[0] == LOCALHOST6 and addr[2:] == (0, 0)
            assert taddr == (LOCALHOST6, taddr[1], 0, 0)
        elif family == "unix":
            assert addr == os.path.join(unix_dir, "snd")
            assert taddr == os.path.join(unix_dir, "ep")
        await close_and_wait(tr, proto)

    run(loop, main())


def test_unbound_unix_endpoint_as_sender(loop, unix_dir):
    """family=AF_UNIX without addresses: an unbound socket; what its peer
    sees as the sender's address is what a plain unbound socket gives."""
    async def main():
        tr, proto = await endpoint(loop, family=socket.AF_UNIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as plain:
            unbound_name = plain.getsockname()
        assert tr.get_extra_info("sockname") == unbound_name
        assert tr.get_extra_info("peername") is None
        with RawDgram(loop, bound_socket("unix", unix_dir, "r1")) as peer, \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ref:
            ref.bind(os.path.join(unix_dir, "r2"))
            ref.settimeout(TIMEOUT)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"ref", os.path.join(unix_dir, "r2"))
            expected = ref.recvfrom(100)[1]
            tr.sendto(b"anonymous", peer.addr)
            await peer.wait_count(1)
            assert peer.received == [(b"anonymous", expected)]
        await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("family", ["udp4", "unix"])
def test_empty_datagrams(loop, family, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs(family, unix_dir))
        taddr = tr.get_extra_info("sockname")
        with RawDgram(loop, bound_socket(family, unix_dir)) as peer:
            # Received: datagram_received(b'', addr).
            peer.sendto(b"", taddr)
            peer.sendto(b"end", taddr)
            await proto.wait_datagrams(2)
            assert proto.datagrams == [(b"", peer.addr), (b"end", peer.addr)]
            # Sent: 3.13 sends them, older versions drop them.
            tr.sendto(b"", peer.addr)
            tr.sendto(bytearray(), peer.addr)
            tr.sendto(memoryview(b""), peer.addr)
            tr.sendto(b"end", peer.addr)
            if PY313:
                await peer.wait_count(4)
                assert peer.data == [b"", b"", b"", b"end"]
            else:
                await peer.wait_count(1)
                assert peer.data == [b"end"]
            assert [a for _, a in peer.received] == \
                [taddr] * len(peer.received)
        assert proto.errors == []
        await close_and_wait(tr, proto)

    run(loop, main())


# -------------------------------------------------------- error_received


@pytest.mark.parametrize("family", FAMILIES)
def test_error_received_connection_refused(loop, family, unix_dir):
    """A connected endpoint whose peer is gone gets ECONNREFUSED through
    error_received(); the transport stays open."""
    async def main():
        gone = bound_socket(family, unix_dir, "gone")
        addr = gone.getsockname()
        tr, proto = await endpoint(
            loop, remote_addr=remote_arg(family, addr),
            **({"family": socket.AF_UNIX} if family == "unix" else {}))
        gone.close()
        for _ in range(50):
            tr.sendto(b"anyone there?")
            if await wait_briefly(proto, lambda: proto.errors, 0.2):
                break
        exc = await proto.wait_error()
        assert isinstance(exc, ConnectionRefusedError), proto.errors
        assert exc.errno == errno.ECONNREFUSED
        assert not tr.is_closing()
        assert not proto.is_lost
        await spin(loop)
        assert not proto.is_lost
        await close_and_wait(tr, proto)
        assert proto.events[0] == "made" and proto.events[-1] == "lost"
        assert set(proto.events[1:-1]) == {"error"}

    run(loop, main())


def test_error_received_on_sendto_failure(loop, unix_dir):
    """sendto() to a Unix path nobody listens on: error_received(), and the
    endpoint keeps working."""
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir))
        tr.sendto(b"lost", os.path.join(unix_dir, "nobody"))
        exc = await proto.wait_error()
        assert isinstance(exc, FileNotFoundError), proto.errors
        assert not tr.is_closing()
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            tr.sendto(b"still works", peer.addr)
            await peer.wait_count(1)
            assert peer.data == [b"still works"]
        assert len(proto.errors) == 1
        await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("bad_addr", [None, "not an address", (1, 2, 3)],
                         ids=["None", "str", "3-tuple"])
def test_sendto_invalid_address_is_a_fatal_error(loop, exc_records,
                                                 bad_addr):
    """On an unconnected endpoint, an address the socket rejects with a
    TypeError closes the transport: exception handler, then
    connection_lost(exc).  sendto() itself does not raise."""
    async def main():
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
        tr.sendto(b"where to?", bad_addr)
        assert tr.is_closing()
        exc = await proto.wait_lost()
        assert isinstance(exc, TypeError)
        records = exc_records.take()
        assert len(records) == 1, records
        ctx = records[0]
        assert ctx["message"] == "Fatal write error on datagram transport"
        assert ctx["exception"] is exc
        assert ctx["transport"] is tr
        assert ctx["protocol"] is proto
        assert proto.events == ["made", "lost"]

    run(loop, main())


@pytest.mark.parametrize("fields, exc_type", [
    ((1 << 20, 0), OverflowError),
    ((1.5, 0), TypeError),
    ((0, "x"), TypeError),
], ids=["flowinfo-out-of-range", "flowinfo-float", "scope-id-str"])
def test_sendto_invalid_ipv6_fields_are_a_fatal_error(loop, exc_records,
                                                      fields, exc_type):
    """An IPv6 address tuple whose flowinfo or scope id the socket module
    rejects sends nothing and closes the transport, as the stdlib's
    sock.sendto() raising does."""
    async def main():
        with RawDgram(loop, bound_socket("udp6", None)) as peer:
            tr, proto = await endpoint(loop, local_addr=(LOCALHOST6, 0))
            tr.sendto(b"x", (LOCALHOST6, peer.addr[1]) + fields)
            exc = await proto.wait_lost()
            assert isinstance(exc, exc_type), exc
            [ctx] = exc_records.take()
            assert ctx["message"] == "Fatal write error on datagram transport"
            assert not await wait_briefly(peer, lambda: peer.data, 0.05)

    run(loop, main())


def test_sendto_abstract_unix_address_given_as_str(loop):
    """A Linux abstract address ("\0name") is as long as its name: the
    datagram reaches the socket bound to exactly that name."""
    name = f"\0aloop-test-{os.getpid()}-{id(loop)}"
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw.bind(name)

    async def main():
        with RawDgram(loop, raw) as peer:
            tr, proto = await endpoint(loop, family=socket.AF_UNIX)
            tr.sendto(b"abstract", name)
            await peer.wait_count(1)
            assert peer.data == [b"abstract"]
            await close_and_wait(tr, proto)

    run(loop, main())


class RaisingProto(DgramProto):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if data == b"raise":
            raise ZeroDivisionError("in datagram_received")


def test_datagram_received_exception_goes_to_exception_handler(
        loop, exc_records, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, RaisingProto,
                                   **local_kwargs("unix", unix_dir))
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            peer.sendto(b"raise", tr.get_extra_info("sockname"))
            await proto.wait_datagrams(1)
            await spin(loop)
            records = exc_records.take()
            assert len(records) == 1, records
            assert isinstance(records[0].get("exception"), ZeroDivisionError)
            # The transport is not closed by it.
            assert not tr.is_closing()
            peer.sendto(b"next", tr.get_extra_info("sockname"))
            await proto.wait_datagrams(2)
            assert proto.data == [b"raise", b"next"]
        await close_and_wait(tr, proto)
        assert exc_records.take() == []

    run(loop, main())


def test_protocol_without_receive_methods(loop, exc_records, unix_dir):
    """A protocol with neither datagram_received nor error_received gets
    the AttributeError naming the method: from sendto() when its send
    fails at once, through the exception handler for a datagram; the
    endpoint stays open."""
    class Bare(asyncio.BaseProtocol):
        pass

    async def main():
        tr, _ = await loop.create_datagram_endpoint(
            Bare, **local_kwargs("unix", unix_dir))
        with pytest.raises(AttributeError, match="'error_received'"):
            tr.sendto(b"lost", os.path.join(unix_dir, "nobody"))
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            peer.sendto(b"hello", tr.get_extra_info("sockname"))
            await Notifier().wait(lambda: exc_records.records, poll=0.005,
                                  what="exception handler")
        [ctx] = exc_records.take()
        assert isinstance(ctx["exception"], AttributeError)
        assert "'datagram_received'" in str(ctx["exception"])
        assert not tr.is_closing()
        tr.close()
        await spin(loop)

    run(loop, main())


# ----------------------------------------------------- sendto buffering


async def fill_until_buffered(tr, sent, start=0, size=500, limit=10_000):
    """sendto() numbered datagrams until the transport has to buffer one
    (the peer does not read); return the next index."""
    i = start
    while tr.get_write_buffer_size() == 0:
        assert i - start < limit, "the socket never blocked"
        data = payload(i, size)
        tr.sendto(data)
        sent.append(data)
        i += 1
    assert tr.get_write_buffer_size() == size + HEADER
    return i


def small_pair(unix_dir):
    """Two bound Unix datagram sockets, the first connected to the second
    and with a small send buffer.  (Not socketpair(): its peer name is ''
    and the standard library's transport then calls sendto(data, None).)"""
    a = bound_socket("unix", unix_dir, "a")
    b = bound_socket("unix", unix_dir, "b")
    a.connect(b.getsockname())
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return a, b


def test_sendto_buffering_and_flow_control(loop, unix_dir):
    high, low = 4000, 1000
    size = 500

    async def main():
        a, b = small_pair(unix_dir)
        tr, proto = await endpoint(loop, sock=a)
        with RawDgram(loop, b) as peer:
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            tr.set_write_buffer_limits(high=high, low=low)
            assert tr.get_write_buffer_limits() == (low, high)
            assert tr.get_write_buffer_size() == 0
            sent = []
            i = await fill_until_buffered(tr, sent, size=size)
            in_kernel = len(sent) - 1
            nbuffered = 1
            # Each buffered datagram adds to the size; pause_writing() is
            # called from sendto() once it is above the high-water mark.
            while not proto.paused_sizes:
                assert nbuffered < 100
                before = tr.get_write_buffer_size()
                assert before <= high
                tr.sendto(payload(i, size))
                sent.append(payload(i, size))
                i += 1
                nbuffered += 1
                assert tr.get_write_buffer_size() == before + size + HEADER
            assert proto.paused_sizes == [nbuffered * (size + HEADER)]
            assert proto.paused_sizes[0] > high
            assert proto.events == ["made", "pause_writing"]
            # While paused sendto() still buffers (a copy of the data).
            for _ in range(3):
                mutable = bytearray(payload(i, size))
                before = tr.get_write_buffer_size()
                tr.sendto(mutable)
                sent.append(bytes(mutable))
                mutable[:] = b"\xff" * size
                i += 1
                nbuffered += 1
                assert tr.get_write_buffer_size() == before + size + HEADER
            await spin(loop)
            assert proto.events == ["made", "pause_writing"]
            assert peer.received == []
            # The peer drains: everything arrives, in order.
            await peer.wait_count(len(sent))
            assert peer.data == sent
            assert in_kernel > 0
            await proto.wait(lambda: proto.resumed_sizes,
                             what="resume_writing")
            assert proto.events == ["made", "pause_writing",
                                    "resume_writing"]
            assert proto.resumed_sizes[0] <= low
            await proto.wait(
                lambda: tr.get_write_buffer_size() == drained_size(
                    tr, nbuffered), what="empty buffer")
            assert proto.errors == []
            # Below the high-water mark again: sent at once.
            tr.sendto(b"after")
            await peer.wait_count(len(sent) + 1)
            assert peer.data[-1] == b"after"
            await close_and_wait(tr, proto)
        assert proto.events == ["made", "pause_writing", "resume_writing",
                                "lost"]

    run(loop, main())


def test_set_write_buffer_limits(loop, unix_dir):
    async def main():
        a, b = small_pair(unix_dir)
        tr, proto = await endpoint(loop, sock=a)
        with RawDgram(loop, b) as peer:
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=1, low=2)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=-1)
            tr.set_write_buffer_limits(high=1000)
            assert tr.get_write_buffer_limits() == (250, 1000)
            tr.set_write_buffer_limits(low=100)
            assert tr.get_write_buffer_limits() == (100, 400)
            tr.set_write_buffer_limits()
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            sent = []
            await fill_until_buffered(tr, sent, size=300)
            assert proto.events == ["made"]
            # Lowering the high-water mark below the buffer size pauses at
            # once.
            tr.set_write_buffer_limits(high=300 + HEADER, low=0)
            assert proto.events == ["made"]
            tr.set_write_buffer_limits(high=300 + HEADER - 1, low=0)
            assert proto.events == ["made", "pause_writing"]
            assert proto.paused_sizes == [300 + HEADER]
            # Raising the limits does not resume by itself (above the low
            # mark, and only sending does).
            tr.set_write_buffer_limits(high=10_000, low=300 + HEADER - 1)
            await spin(loop)
            assert proto.events == ["made", "pause_writing"]
            await peer.wait_count(len(sent))
            assert peer.data == sent
            await proto.wait(lambda: proto.resumed_sizes,
                             what="resume_writing")
            assert proto.resumed_sizes == [drained_size(tr, 1)]
            await close_and_wait(tr, proto)

    run(loop, main())


class FailingFlowProto(DgramProto):
    def pause_writing(self):
        super().pause_writing()
        raise ZeroDivisionError("pause")

    def resume_writing(self):
        super().resume_writing()
        raise ValueError("resume")


def test_pause_writing_error_goes_to_exception_handler(loop, exc_records,
                                                      unix_dir):
    async def main():
        a, b = small_pair(unix_dir)
        tr, proto = await endpoint(loop, FailingFlowProto, sock=a)
        with RawDgram(loop, b) as peer:
            tr.set_write_buffer_limits(high=0)
            sent = []
            await fill_until_buffered(tr, sent)
            assert proto.events == ["made", "pause_writing"]
            tr.set_write_buffer_limits(high=10_000)
            records = exc_records.take()
            assert len(records) == 1
            ctx = records[0]
            assert ctx["message"] == "protocol.pause_writing() failed"
            assert isinstance(ctx["exception"], ZeroDivisionError)
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            assert not tr.is_closing()
            await peer.wait_count(len(sent))
            await proto.wait(lambda: proto.resumed_sizes,
                             what="resume_writing")
            await spin(loop)
            records = exc_records.take()
            assert len(records) == 1
            ctx = records[0]
            assert ctx["message"] == "protocol.resume_writing() failed"
            assert isinstance(ctx["exception"], ValueError)
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            assert not tr.is_closing()
            await close_and_wait(tr, proto)

    run(loop, main())


def test_close_waits_for_buffered_datagrams(loop, unix_dir):
    async def main():
        a, b = small_pair(unix_dir)
        tr, proto = await endpoint(loop, sock=a)
        with RawDgram(loop, b) as peer:
            sent = []
            i = await fill_until_buffered(tr, sent)
            for k in range(5):
                tr.sendto(payload(i + k, 500))
                sent.append(payload(i + k, 500))
            tr.close()
            assert tr.is_closing()
            await spin(loop)
            # Nothing lost while the buffer is not empty.
            assert proto.events == ["made"]
            peer.start_reading()
            assert await proto.wait_lost() is None
            await peer.wait_count(len(sent))
            assert peer.data == sent
            assert proto.events == ["made", "lost"]

    run(loop, main())


def test_abort_drops_buffered_datagrams(loop, unix_dir):
    async def main():
        a, b = small_pair(unix_dir)
        tr, proto = await endpoint(loop, sock=a)
        with RawDgram(loop, b) as peer:
            sent = []
            await fill_until_buffered(tr, sent)
            in_kernel = sent[:-1]
            tr.sendto(b"buffered too")
            tr.abort()
            assert tr.is_closing()
            assert await proto.wait_lost() is None
            assert proto.events == ["made", "lost"]
            # What the kernel had is still there; nothing else comes.
            received = []
            while True:
                try:
                    received.append(peer.sock.recv(1000))
                except BlockingIOError:
                    break
            assert received == in_kernel

    run(loop, main())


# ----------------------------------------------------- sendto arguments


@pytest.mark.parametrize("family", FAMILIES)
def test_sendto_address_on_a_connected_endpoint(loop, family, unix_dir):
    async def main():
        with RawDgram(loop, bound_socket(family, unix_dir, "peer")) as peer:
            kw = {"family": socket.AF_UNIX} if family == "unix" else {}
            tr, proto = await endpoint(
                loop, remote_addr=remote_arg(family, peer.addr), **kw)
            address = resolved(family, peer.addr)
            assert tr.get_extra_info("peername") == peer.addr
            other = (os.path.join(unix_dir, "other") if family == "unix"
                     else (host_of(family), 9))
            message = f"Invalid address: must be None or {address}"
            with pytest.raises(ValueError) as info:
                tr.sendto(b"no", other)
            assert str(info.value) == message
            if family == "udp6":
                # The stored address is getaddrinfo's 4-tuple: the 2-tuple
                # given as remote_addr is "different".
                with pytest.raises(ValueError) as info:
                    tr.sendto(b"no", tuple(peer.addr[:2]))
                assert str(info.value) == message
            # Empty data: 3.13 checks the address, older versions return
            # before looking at it.
            if PY313:
                with pytest.raises(ValueError) as info:
                    tr.sendto(b"", other)
                assert str(info.value) == message
            else:
                tr.sendto(b"", other)
            # Type errors come first.
            with pytest.raises(TypeError):
                tr.sendto("text", other)
            tr.sendto(b"one")
            tr.sendto(b"two", None)
            tr.sendto(b"three", address)
            await peer.wait_count(3)
            assert peer.data == [b"one", b"two", b"three"]
            assert proto.errors == []
            await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("bad", ["text", 42, None, [b"x"], 1.5,
                                 array.array("b", b"xy")],
                         ids=["str", "int", "None", "list", "float", "array"])
def test_sendto_non_bytes_raises_type_error(loop, bad, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir))
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            with pytest.raises(TypeError) as info:
                tr.sendto(bad, peer.addr)
            assert str(info.value) == (
                f"data argument must be a bytes-like object, "
                f"not {type(bad).__name__!r}")
            assert tr.get_write_buffer_size() == 0
            assert not tr.is_closing()
            tr.sendto(b"ok", peer.addr)
            await peer.wait_count(1)
            assert peer.data == [b"ok"]
        assert proto.errors == []
        await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_sendto_after_close_warns_after_five(loop, how, caplog):
    """On a connected endpoint, sendto() after close()/abort() sends
    nothing; from the fifth call on, each logs a warning."""
    async def main():
        with RawDgram(loop, bound_socket("udp4", None)) as peer:
            tr, proto = await endpoint(loop, remote_addr=peer.addr)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                getattr(tr, how)()
                tr.sendto(b"lost 1")
                tr.sendto(b"lost 2")
                assert await proto.wait_lost() is None
                tr.sendto(b"lost 3")
                tr.sendto(b"lost 4")
                assert not [r for r in caplog.records
                            if r.name == "asyncio"]
                tr.sendto(b"lost 5")
                tr.sendto(b"lost 6", peer.addr)
                # The argument checks still apply.
                with pytest.raises(ValueError):
                    tr.sendto(b"x", (LOCALHOST4, 9))
                with pytest.raises(TypeError):
                    tr.sendto("x")
            warned = [r for r in caplog.records if r.name == "asyncio"]
            assert [r.getMessage() for r in warned] == \
                ["socket.send() raised exception."] * 2
            assert all(r.levelno == logging.WARNING for r in warned)
            assert proto.events == ["made", "lost"]
            # Nothing was sent: a datagram sent now is the first to arrive.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"marker", peer.addr)
            await peer.wait_count(1)
            assert peer.data == [b"marker"]

    run(loop, main())


def test_sendto_on_unconnected_endpoint_after_connection_lost(loop,
                                                               exc_records):
    """An unconnected endpoint has no lost-writes counter: between close()
    and connection_lost() sendto() still sends; after it, the socket is
    gone and sendto() raises AttributeError (the stdlib's _sock is None)."""
    async def main():
        with RawDgram(loop, bound_socket("udp4", None)) as peer:
            tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
            tr.close()
            tr.sendto(b"after close", peer.addr)
            await peer.wait_count(1)
            assert await proto.wait_lost() is None
            with pytest.raises(AttributeError):
                tr.sendto(b"after connection_lost", peer.addr)
            assert peer.data == [b"after close"]

    run(loop, main())


# -------------------------------------------------- close / abort / extra


@pytest.mark.parametrize("how", ["close", "abort", "close-abort",
                                 "abort-close"])
def test_close_and_abort_call_connection_lost_once(loop, how, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir))
        for step in how.split("-"):
            getattr(tr, step)()
            assert tr.is_closing()
        getattr(tr, how.split("-")[0])()
        # connection_lost() is called later, from the loop.
        assert proto.events == ["made"]
        assert await proto.wait_lost() is None
        await spin(loop)
        tr.close()
        tr.abort()
        await spin(loop)
        assert proto.events == ["made", "lost"]
        assert tr.is_closing()

    run(loop, main())


def test_close_stops_reading(loop, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir))
        addr = tr.get_extra_info("sockname")
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            peer.sendto(b"before", addr)
            await proto.wait_datagrams(1)
            peer.sendto(b"too late", addr)
            tr.close()
            await proto.wait_lost()
            await spin(loop)
            assert proto.datagrams == [(b"before", peer.addr)]
            assert proto.events == ["made", "lost"]

    run(loop, main())


def test_connection_lost_when_closed_in_connection_made(loop, unix_dir):
    class ClosingProto(DgramProto):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.close()

    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            ClosingProto, **local_kwargs("unix", unix_dir))
        assert tr.is_closing()
        assert await proto.wait_lost() is None
        assert proto.events == ["made", "lost"]

    run(loop, main())


@pytest.mark.parametrize("connected", [False, True],
                         ids=["unconnected", "connected"])
@pytest.mark.parametrize("family", FAMILIES)
def test_get_extra_info(loop, family, connected, unix_dir):
    async def main():
        with RawDgram(loop, bound_socket(family, unix_dir, "peer")) as peer:
            kw = local_kwargs(family, unix_dir)
            if connected:
                kw["remote_addr"] = remote_arg(family, peer.addr)
            tr, proto = await endpoint(loop, **kw)
            sock = tr.get_extra_info("socket")
            assert sock.family == af_of(family)
            assert sock.type == socket.SOCK_DGRAM
            assert sock.fileno() >= 0
            assert sock.gettimeout() == 0  # non-blocking
            sockname = tr.get_extra_info("sockname")
            assert sockname == sock.getsockname()
            if family == "unix":
                assert sockname == os.path.join(unix_dir, "ep")
            else:
                assert sockname[0] == host_of(family) and sockname[1] > 0
            peername = tr.get_extra_info("peername")
            if connected:
                assert peername == peer.addr == sock.getpeername()
            else:
                assert peername is None
            assert tr.get_extra_info("no such thing") is None
            assert tr.get_extra_info("no such thing", 42) == 42
            await close_and_wait(tr, proto)
            # Still there after the transport is closed.
            assert tr.get_extra_info("sockname") == sockname
            assert tr.get_extra_info("peername") == peername

    run(loop, main())


def test_max_size_cuts_longer_datagrams(loop, unix_dir):
    """The stdlib receives with recvfrom(self.max_size): set smaller on a
    transport, a longer datagram arrives cut to it (the rest is lost)."""
    async def main():
        with RawDgram(loop, bound_socket("unix", unix_dir, "peer")) as peer:
            tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir),
                                       remote_addr=peer.addr)
            assert tr.max_size == 256 * 1024
            tr.max_size = 4
            peer.sendto(b"0123456789", tr.get_extra_info("sockname"))
            peer.sendto(b"ab", tr.get_extra_info("sockname"))
            await proto.wait_datagrams(2)
            assert proto.data == [b"0123", b"ab"]
            await close_and_wait(tr, proto)

    run(loop, main())


class CheckingDgramProto(DgramProto):
    def __init__(self):
        super().__init__()
        self.received = ReceivedBytes()

    def datagram_received(self, data, addr):
        self.received.take(data)  # and no other reference to data
        self._notify()

    async def wait_received(self, n):
        await self.wait(lambda: self.received.count >= n, what=f"{n} reads")


@pytest.mark.parametrize("family", ["udp4", "unix"])
def test_received_bytes_stay_intact_and_fresh(loop, family, unix_dir):
    """Bursts of datagrams of close sizes (read several per wake-up): the
    ones a protocol keeps (directly or through a memoryview) still hold
    their own data after later ones, and each one hashes and sizes as a
    new bytes object would."""
    async def main():
        with RawDgram(loop, bound_socket(family, unix_dir, "peer")) as peer:
            tr, proto = await endpoint(loop, CheckingDgramProto,
                                       **local_kwargs(family, unix_dir))
            sent = [bytes([i + 1]) * size
                    for i, size in enumerate(RECEIVED_SIZES)]
            # 8 at a time: a Unix datagram socket queues 10 at most
            for i, msg in enumerate(sent, 1):
                peer.sendto(msg, tr.get_extra_info("sockname"))
                if i % 8 == 0 or i == len(sent):
                    await proto.wait_received(i)
            proto.received.check(sent)
            await close_and_wait(tr, proto)

    run(loop, main())


def test_pause_and_resume_reading(loop, unix_dir):
    async def main():
        tr, proto = await endpoint(loop, **local_kwargs("unix", unix_dir))
        addr = tr.get_extra_info("sockname")
        with RawDgram(loop, bound_socket("unix", unix_dir)) as peer:
            assert tr.is_reading()
            tr.pause_reading()
            tr.pause_reading()
            assert not tr.is_reading()
            for k in range(3):
                peer.sendto(b"%d" % k, addr)
            await spin(loop)
            assert proto.datagrams == []
            tr.resume_reading()
            tr.resume_reading()
            assert tr.is_reading()
            await proto.wait_datagrams(3)
            assert proto.data == [b"0", b"1", b"2"]
        await close_and_wait(tr, proto)
        assert not tr.is_reading()

    run(loop, main())


def test_unclosed_transport_resource_warning(loop_factory):
    """A transport never closed warns when garbage collected, and closes its
    socket."""
    lp = loop_factory()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        async def main():
            await lp.create_datagram_endpoint(DgramProto, sock=a)

        run(lp, main())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Closing the loop drops its references to the transport.
            lp.close()
            gc.collect()
            gc.collect()
        messages = [str(w.message) for w in caught
                    if issubclass(w.category, ResourceWarning)]
        assert any("unclosed transport" in m for m in messages), messages
        assert a.fileno() == -1
        with pytest.raises(ConnectionRefusedError):
            b.send(b"anyone?")
    finally:
        lp.close()
        a.close()
        b.close()


def test_unclosed_endpoint_at_exit(loop_kind):
    """A process exiting with a datagram endpoint still open (and its loop
    not closed) exits cleanly."""
    proc = run_child(loop_kind, """
        import socket
        class P(asyncio.DatagramProtocol):
            def connection_made(self, tr):
                self.tr = tr
        loop = new_loop()
        assert isinstance(loop, LOOP_CLASS)
        async def main():
            tr, p = await loop.create_datagram_endpoint(
                P, local_addr=("127.0.0.1", 0))
            tr.sendto(b"to myself", tr.get_extra_info("sockname"))
            await asyncio.sleep(0.01)
            return tr, p
        KEEP = loop.run_until_complete(main())
        print("done")
    """)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "done\n", describe(proc)
    # (With PYTHONASYNCIODEBUG=1 the standard library's own loop may print
    # an ignored exception from its __del__ at shutdown: not checked.)
    assert "Fatal Python error" not in proc.stderr, describe(proc)


def test_debug_mode_logs_endpoint_creation(loop, caplog):
    async def main():
        loop.set_debug(True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            server_tr, server = await endpoint(loop,
                                               local_addr=(LOCALHOST4, 0))
            addr = server_tr.get_extra_info("sockname")
            tr, proto = await endpoint(loop, remote_addr=addr)
        messages = [r.getMessage() for r in caplog.records
                    if r.name == "asyncio"]
        created = [m for m in messages if m.startswith("Datagram endpoint")]
        assert len(created) == 2, messages
        assert created[0].startswith(
            f"Datagram endpoint local_addr={(LOCALHOST4, 0)!r} "
            "remote_addr=None created: (")
        assert repr(server_tr) in created[0]
        assert created[1].startswith(
            f"Datagram endpoint remote_addr={addr!r} created: (")
        assert repr(tr) in created[1]
        tr.sendto(b"debug")
        await server.wait_datagrams(1)
        await close_and_wait(tr, proto)
        await close_and_wait(server_tr, server)

    run(loop, main())


# ------------------------------------------- create_datagram_endpoint args


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_family_without_addresses(loop, family):
    """An unbound socket of that family: the first sendto() binds it."""
    async def main():
        tr, proto = await endpoint(loop, family=family)
        sock = tr.get_extra_info("socket")
        assert sock.family == family
        assert sock.proto == 0
        unbound = ("0.0.0.0", 0) if family == socket.AF_INET \
            else ("::", 0, 0, 0)
        assert tr.get_extra_info("sockname") == unbound
        assert tr.get_extra_info("peername") is None
        name = "udp6" if family == socket.AF_INET6 else "udp4"
        with RawDgram(loop, bound_socket(name, None)) as peer:
            tr.sendto(b"hi", peer.addr)
            await peer.wait_count(1)
            [(data, addr)] = peer.received
            assert data == b"hi"
            # Bound to the wildcard address and a port by sendto().
            assert addr[0] == peer.addr[0]
            assert addr[1] == sock.getsockname()[1] > 0
            assert sock.getsockname() == (unbound[0], addr[1], *unbound[2:])
            peer.sendto(b"back", addr)
            await proto.wait_datagrams(1)
            assert proto.datagrams == [(b"back", peer.addr)]
        await close_and_wait(tr, proto)

    run(loop, main())


def test_no_family_no_address(loop):
    async def main():
        with pytest.raises(ValueError) as info:
            await loop.create_datagram_endpoint(DgramProto)
        assert str(info.value) == "unexpected address family"

    run(loop, main())


def test_proto_argument(loop):
    async def main():
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0),
                                   proto=socket.IPPROTO_UDP)
        assert tr.get_extra_info("socket").proto == socket.IPPROTO_UDP
        await close_and_wait(tr, proto)
        # proto=0 with an address: getaddrinfo's answer, IPPROTO_UDP.
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
        assert tr.get_extra_info("socket").proto == socket.IPPROTO_UDP
        await close_and_wait(tr, proto)
        # With an IP address, the standard library replaces TCP by UDP.
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0),
                                   proto=socket.IPPROTO_TCP)
        assert tr.get_extra_info("socket").proto == socket.IPPROTO_UDP
        await close_and_wait(tr, proto)
        # Without an address, the socket is made with what was asked.
        tr, proto = await endpoint(loop, family=socket.AF_INET,
                                   proto=socket.IPPROTO_UDP)
        assert tr.get_extra_info("socket").proto == socket.IPPROTO_UDP
        await close_and_wait(tr, proto)
        with pytest.raises(OSError) as info:
            await loop.create_datagram_endpoint(
                DgramProto, family=socket.AF_INET, proto=socket.IPPROTO_TCP)
        assert info.value.errno == errno.EPROTONOSUPPORT

    run(loop, main())


def test_flags_argument_reaches_getaddrinfo(loop):
    async def main():
        tr, proto = await endpoint(loop, local_addr=("localhost", 0),
                                   family=socket.AF_INET)
        assert tr.get_extra_info("sockname")[0] == LOCALHOST4
        await close_and_wait(tr, proto)
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0),
                                   flags=socket.AI_NUMERICHOST)
        await close_and_wait(tr, proto)
        with pytest.raises(socket.gaierror):
            await loop.create_datagram_endpoint(
                DgramProto, local_addr=("localhost", 0),
                family=socket.AF_INET, flags=socket.AI_NUMERICHOST)

    run(loop, main())


def test_address_family_mismatch(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.create_datagram_endpoint(
                DgramProto, local_addr=(LOCALHOST6, 0), family=socket.AF_INET)
        with pytest.raises(ValueError) as info:
            await loop.create_datagram_endpoint(
                DgramProto, local_addr=(LOCALHOST4, 0),
                remote_addr=(LOCALHOST6, 9))
        assert str(info.value) == "can not get address information"

    run(loop, main())


def test_reuse_port(loop):
    async def main():
        tr1, proto1 = await endpoint(loop, local_addr=(LOCALHOST4, 0),
                                     reuse_port=True)
        addr = tr1.get_extra_info("sockname")
        sock1 = tr1.get_extra_info("socket")
        assert sock1.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        tr2, proto2 = await endpoint(loop, local_addr=addr, reuse_port=True)
        assert tr2.get_extra_info("sockname") == addr
        with pytest.raises(OSError) as info:
            await loop.create_datagram_endpoint(DgramProto, local_addr=addr)
        assert info.value.errno == errno.EADDRINUSE
        await close_and_wait(tr1, proto1)
        await close_and_wait(tr2, proto2)
        tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
        assert tr.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        await close_and_wait(tr, proto)

    run(loop, main())


def test_allow_broadcast(loop):
    """SO_BROADCAST is set; remote_addr is then not connect()ed but used as
    the default (and only) destination."""
    async def main():
        with RawDgram(loop, bound_socket("udp4", None)) as peer:
            tr, proto = await endpoint(loop, remote_addr=peer.addr,
                                       allow_broadcast=True)
            sock = tr.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET,
                                   socket.SO_BROADCAST) != 0
            assert tr.get_extra_info("peername") is None
            tr.sendto(b"default destination")
            tr.sendto(b"same", peer.addr)
            with pytest.raises(ValueError) as info:
                tr.sendto(b"no", (LOCALHOST4, 9))
            assert str(info.value) == \
                f"Invalid address: must be None or {peer.addr}"
            await peer.wait_count(2)
            assert peer.data == [b"default destination", b"same"]
            assert peer.received[0][1][1] == tr.get_extra_info(
                "socket").getsockname()[1]
            await close_and_wait(tr, proto)
            tr, proto = await endpoint(loop, local_addr=(LOCALHOST4, 0))
            assert tr.get_extra_info("socket").getsockopt(
                socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
            await close_and_wait(tr, proto)

    run(loop, main())


def test_sock_argument(loop, unix_dir):
    async def main():
        sock = bound_socket("udp4", None)
        assert sock.getblocking()
        tr, proto = await endpoint(loop, sock=sock)
        # Made non-blocking; the same socket.
        assert not sock.getblocking()
        assert tr.get_extra_info("socket").fileno() == sock.fileno()
        assert tr.get_extra_info("sockname") == sock.getsockname()
        assert tr.get_extra_info("peername") is None
        await close_and_wait(tr, proto)
        assert sock.fileno() == -1  # closed with the transport

        # A connected socket: sendto() without an address goes to the peer.
        with RawDgram(loop, bound_socket("unix", unix_dir, "peer")) as peer:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.connect(peer.addr)
            tr, proto = await endpoint(loop, sock=sock)
            assert tr.get_extra_info("peername") == peer.addr
            tr.sendto(b"to the peer")
            tr.sendto(b"explicitly", peer.addr)
            await peer.wait_count(2)
            assert peer.data == [b"to the peer", b"explicitly"]
            await close_and_wait(tr, proto)

    run(loop, main())


def test_socket_of_a_live_transport_is_refused_from_3_12(loop):
    """3.12 made _make_datagram_transport refuse a socket a live transport
    has (_ensure_fd_no_transport); 3.11 builds a second transport."""
    async def main():
        sock = bound_socket("udp4", None)
        tr, proto = await endpoint(loop, sock=sock)
        if PY312:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.create_datagram_endpoint(DgramProto, sock=sock)
        else:
            tr2, _ = await loop.create_datagram_endpoint(DgramProto,
                                                         sock=sock)
            tr2.abort()
        await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("kwarg", [
    dict(local_addr=(LOCALHOST4, 0)),
    dict(remote_addr=(LOCALHOST4, 9)),
    dict(family=socket.AF_INET),
    dict(proto=socket.IPPROTO_UDP),
    dict(flags=socket.AI_PASSIVE),
    dict(reuse_port=True),
    dict(allow_broadcast=True),
    dict(local_addr=(LOCALHOST4, 0), reuse_port=True),
], ids=lambda kw: "+".join(kw))
def test_sock_with_other_arguments_is_rejected(loop, kwarg):
    async def main():
        with bound_socket("udp4", None) as sock:
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(DgramProto, sock=sock,
                                                    **kwarg)
            opts = dict(local_addr=None, remote_addr=None, family=0,
                        proto=0, flags=0, reuse_port=None,
                        allow_broadcast=None)
            opts.update(kwarg)
            problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
            assert str(info.value) == (
                "socket modifier keyword arguments can not be used when "
                f"sock is specified. ({problems})")
            assert sock.fileno() != -1  # left alone

    run(loop, main())


def test_sock_of_the_wrong_type_is_rejected(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(DgramProto, sock=sock)
            if PY313:
                assert str(info.value) == \
                    f"A datagram socket was expected, got {sock!r}"
            else:
                assert str(info.value) == \
                    f"A UDP Socket was expected, got {sock!r}"

    run(loop, main())


def test_reuse_address_is_not_accepted(loop):
    """reuse_address was removed in 3.11 (it was a ValueError before)."""
    async def main():
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(
                DgramProto, local_addr=(LOCALHOST4, 0), reuse_address=True)
        assert "reuse_address" in str(info.value)

    run(loop, main())


@pytest.mark.parametrize("arg", ["local_addr", "remote_addr"])
@pytest.mark.parametrize("bad", [b"/tmp/x", ("/tmp/x",), 42],
                         ids=["bytes", "tuple", "int"])
def test_unix_address_must_be_a_str(loop, arg, bad):
    async def main():
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(
                DgramProto, family=socket.AF_UNIX, **{arg: bad})
        assert str(info.value) == "string is expected"

    run(loop, main())


@pytest.mark.parametrize("arg", ["local_addr", "remote_addr"])
@pytest.mark.parametrize("bad", [(LOCALHOST6, 0, 0, 0), [LOCALHOST4, 0],
                                 "127.0.0.1", (LOCALHOST4,)],
                         ids=["4-tuple", "list", "str", "1-tuple"])
def test_ip_address_must_be_a_2_tuple(loop, arg, bad):
    async def main():
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(DgramProto, **{arg: bad})
        assert str(info.value) == "2-tuple is expected"

    run(loop, main())


def test_unix_stale_socket_file_is_replaced(loop, unix_path):
    async def main():
        tr, proto = await endpoint(loop, family=socket.AF_UNIX,
                                   local_addr=unix_path)
        await close_and_wait(tr, proto)
        # The socket file is left behind by close() ...
        assert os.path.exists(unix_path)
        # ... and removed by the next endpoint bound there.
        tr, proto = await endpoint(loop, family=socket.AF_UNIX,
                                   local_addr=unix_path)
        with RawDgram(loop, bound_socket("unix", os.path.dirname(unix_path),
                                         "peer")) as peer:
            peer.sendto(b"fresh", unix_path)
            await proto.wait_datagrams(1)
            assert proto.data == [b"fresh"]
        await close_and_wait(tr, proto)
        # Anything else than a socket is not removed.
        os.unlink(unix_path)
        with open(unix_path, "w") as f:
            f.write("not a socket")
        with pytest.raises(OSError) as info:
            await loop.create_datagram_endpoint(
                DgramProto, family=socket.AF_UNIX, local_addr=unix_path)
        assert info.value.errno == errno.EADDRINUSE
        with open(unix_path) as f:
            assert f.read() == "not a socket"

    run(loop, main())


def test_unix_remote_addr_missing(loop, unix_dir):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_datagram_endpoint(
                DgramProto, family=socket.AF_UNIX,
                remote_addr=os.path.join(unix_dir, "missing"))

    run(loop, main())
