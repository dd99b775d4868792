"""The stream (socket) transport: the public Transport API as the standard
library's _SelectorSocketTransport implements it.

The far end of each connection is a plain socket driven with add_reader()
(RawPeer), so that only the transport under test is exercised.
"""

import asyncio
import gc
import logging
import math
import socket
import sys
import warnings
from fractions import Fraction

import pytest

from _net_support import (BIG, LOCALHOST4, LOCALHOST6, Notifier,
                          RecordingProtocol, connect_to_raw_peer,
                          RECEIVED_SIZES, ReceivedBytes, fill_pattern, run,
                          set_linger_reset, spin,
                          unix_dir, unix_path)  # noqa: F401 (fixtures)


PY312 = sys.version_info >= (3, 12)


def connect(loop, factory=RecordingProtocol, family=socket.AF_INET):
    return connect_to_raw_peer(loop, factory, family)


async def close_and_wait(transport, protocol):
    transport.close()
    await protocol.wait_lost()


# ---------------------------------------------------------------- identity


def test_transport_is_an_asyncio_transport(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            assert isinstance(tr, asyncio.Transport)
            assert isinstance(tr, asyncio.ReadTransport)
            assert isinstance(tr, asyncio.WriteTransport)
            assert isinstance(tr, asyncio.BaseTransport)
            assert not isinstance(tr, asyncio.DatagramTransport)
            assert proto.transport is tr
            assert proto.events_summary() == ["made"]
            assert not tr.is_closing()
            assert tr.is_reading()
            assert tr.can_write_eof() is True
            await close_and_wait(tr, proto)
            assert tr.is_closing()

    run(loop, main())


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_extra_info_tcp(loop, family):
    async def main():
        tr, proto, peer = await connect(loop, family=family)
        with peer:
            sock = tr.get_extra_info("socket")
            assert sock is not None
            assert isinstance(sock.fileno(), int) and sock.fileno() >= 0
            assert sock.family == family
            assert sock.type == socket.SOCK_STREAM
            # The stdlib gives a TransportSocket: a restricted view of the
            # socket that still answers the usual queries.
            assert sock.getsockname() == tr.get_extra_info("sockname")
            assert sock.getpeername() == tr.get_extra_info("peername")
            assert sock.getsockopt(socket.IPPROTO_TCP,
                                   socket.TCP_NODELAY) != 0
            host = LOCALHOST6 if family == socket.AF_INET6 else LOCALHOST4
            sockname = tr.get_extra_info("sockname")
            peername = tr.get_extra_info("peername")
            assert sockname[0] == host and peername[0] == host
            assert sockname == peer.sock.getpeername()
            assert peername == peer.sock.getsockname()
            assert tr.get_extra_info("no such key") is None
            assert tr.get_extra_info("no such key", "dflt") == "dflt"
            # A plain TCP transport has no SSL information.
            assert tr.get_extra_info("sslcontext") is None
            assert tr.get_extra_info("ssl_object") is None
            await close_and_wait(tr, proto)
            # Still answered after the connection is lost.
            assert tr.get_extra_info("sockname") == sockname
            assert tr.get_extra_info("peername") == peername

    run(loop, main())


def test_extra_info_unix(loop, unix_path):
    async def main():
        server_side = []

        def factory():
            proto = RecordingProtocol()
            server_side.append(proto)
            return proto

        server = await loop.create_unix_server(factory, unix_path)
        async with server:
            tr, proto = await loop.create_unix_connection(
                RecordingProtocol, unix_path)
            sock = tr.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX
            assert sock.type == socket.SOCK_STREAM
            # An unnamed client socket has the empty name.
            assert tr.get_extra_info("sockname") == ""
            assert tr.get_extra_info("peername") == unix_path
            await proto.wait(lambda: server_side, poll=0.001)
            srv = server_side[0]
            await srv.wait_made()
            assert srv.transport.get_extra_info("sockname") == unix_path
            assert srv.transport.get_extra_info("peername") == ""
            assert srv.transport.get_extra_info("socket").family == \
                socket.AF_UNIX
            assert srv.transport.can_write_eof() is True
            await close_and_wait(tr, proto)
            await srv.wait_lost()

    run(loop, main())


def test_server_side_extra_info(loop):
    async def main():
        server_side = []

        def factory():
            proto = RecordingProtocol()
            server_side.append(proto)
            return proto

        server = await loop.create_server(factory, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(
                RecordingProtocol, LOCALHOST4, port)
            await proto.wait(lambda: server_side, poll=0.001)
            srv = server_side[0]
            await srv.wait_made()
            srv_tr = srv.transport
            assert isinstance(srv_tr, asyncio.Transport)
            assert srv_tr.get_extra_info("peername") == \
                tr.get_extra_info("sockname")
            assert srv_tr.get_extra_info("sockname") == \
                tr.get_extra_info("peername")
            sock = srv_tr.get_extra_info("socket")
            assert sock.family == socket.AF_INET
            assert sock.getpeername() == tr.get_extra_info("sockname")
            # Accepted sockets get TCP_NODELAY too.
            assert sock.getsockopt(socket.IPPROTO_TCP,
                                   socket.TCP_NODELAY) != 0
            await close_and_wait(tr, proto)
            await srv.wait_lost()
            assert srv.lost_exc is None

    run(loop, main())


@pytest.mark.parametrize("hosts", [
    ("127.0.0.1", "127.10.200.3", "127.255.9.99"),
    ("::1", "127.0.0.1", "::1"),
], ids=["ipv4-shapes", "alternating-families"])
def test_server_side_addresses_per_listener(loop, hosts):
    """Each accepted connection reports its own listener's local address
    and its own peer, whatever order connections to several listeners come
    in (dotted quads of every digit count, IPv6 and IPv4 in turn)."""
    async def main():
        accepted = []

        def factory():
            proto = RecordingProtocol()
            accepted.append(proto)
            return proto

        servers = [await loop.create_server(factory, host, 0)
                   for host in hosts]
        try:
            for round_ in range(2):
                for server in servers:
                    addr = server.sockets[0].getsockname()
                    tr, proto = await loop.create_connection(
                        RecordingProtocol, addr[0], addr[1])
                    await proto.wait(lambda: len(accepted) == 1, poll=0.001)
                    srv = accepted.pop()
                    await srv.wait_made()
                    srv_sock = srv.transport.get_extra_info("socket")
                    assert srv.transport.get_extra_info("sockname") == \
                        srv_sock.getsockname() == addr
                    assert srv.transport.get_extra_info("peername") == \
                        srv_sock.getpeername() == \
                        tr.get_extra_info("sockname")
                    assert tr.get_extra_info("peername") == addr
                    await close_and_wait(tr, proto)
                    await srv.wait_lost()
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    run(loop, main())


def test_transport_registry(loop):
    """loop._transports, as the stdlib's own code uses it: a transport
    registers its fd, add_reader() on that fd is refused while it is open,
    the sendfile path deletes and re-adds the entry, and the entry goes
    away with the transport (the map holds it weakly)."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            fd = tr.get_extra_info("socket").fileno()
            registry = loop._transports
            assert registry[fd] is tr
            assert fd in registry and registry.get(fd) is tr
            with pytest.raises(RuntimeError,
                               match="is used by transport"):
                loop.add_reader(fd, lambda: None)
            # What BaseSelectorEventLoop._sendfile_native does around
            # the transfer.
            del registry[fd]
            assert fd not in registry
            loop.add_reader(fd, lambda: None)
            assert loop.remove_reader(fd)
            registry[fd] = tr
            assert registry[fd] is tr
            assert fd in list(registry.keys())
            assert any(v is tr for v in registry.values())
            assert any(k == fd and v is tr for k, v in registry.items())
            assert registry.pop(fd) is tr
            assert registry.pop(fd, "gone") == "gone"
            with pytest.raises(KeyError):
                registry.pop(fd)
            registry[fd] = tr
            await close_and_wait(tr, proto)
            # Closed: the fd may be watched again by others.
            loop._ensure_fd_no_transport(fd)
        del tr, proto
        gc.collect()
        assert fd not in loop._transports
        assert loop._transports.get(fd) is None
        with pytest.raises(KeyError):
            loop._transports[fd]
        with pytest.raises(KeyError):
            del loop._transports[fd]
        assert fd not in list(loop._transports)

    run(loop, main())


# ------------------------------------------------------------------ writing


def test_socket_of_a_live_transport_is_refused_from_3_12(loop):
    """3.12 made _make_socket_transport refuse a socket a live transport
    has (_ensure_fd_no_transport); 3.11 builds a second transport."""
    async def main():
        a, b = socket.socketpair()
        with b:
            tr, proto = await loop.connect_accepted_socket(RecordingProtocol,
                                                           a)
            if sys.version_info >= (3, 12):
                with pytest.raises(RuntimeError,
                                   match="is used by transport"):
                    await loop.connect_accepted_socket(RecordingProtocol, a)
            else:
                tr2, _ = await loop.connect_accepted_socket(
                    RecordingProtocol, a)
                tr2.abort()
            tr.abort()
            await proto.wait_lost()

    run(loop, main())


def test_write_and_writelines(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.write(b"abc")
            tr.write(bytearray(b"def"))
            tr.write(memoryview(b"__ghi__")[2:5])
            tr.write(b"")  # no-op
            tr.writelines([b"jk", bytearray(b"lm"), memoryview(b"no")])
            tr.writelines([])
            tr.writelines(iter([b"p", b"q"]))
            big = fill_pattern(1_000_000, seed=5)
            tr.writelines([big, b"end"])
            expected = b"abcdefghijklmnopq" + big + b"end"
            got = await peer.read_at_least(len(expected))
            assert got == expected
            assert tr.get_write_buffer_size() == 0
            await close_and_wait(tr, proto)
            assert await peer.read_until_eof() == expected
            assert proto.lost_exc is None

    run(loop, main())


@pytest.mark.parametrize("bad", ["text", 42, None, [b"a"], object()],
                         ids=["str", "int", "None", "list", "object"])
def test_write_non_bytes_raises_type_error(loop, bad):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            with pytest.raises(TypeError):
                tr.write(bad)
            # Nothing was sent or buffered; the transport still works.
            assert tr.get_write_buffer_size() == 0
            assert not tr.is_closing()
            tr.write(b"ok")
            assert await peer.read_at_least(2) == b"ok"
            await close_and_wait(tr, proto)
            assert proto.lost_exc is None

    run(loop, main())


def test_write_of_a_non_contiguous_memoryview_is_a_fatal_error(loop,
                                                               exc_records):
    """write() accepts any memoryview; one the socket cannot send (not
    C-contiguous) fails in sock.send(): a fatal write error, as in the
    stdlib, not an exception out of write()."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.write(memoryview(b"abcdef")[::2])
            exc = await proto.wait_lost()
            assert isinstance(exc, BufferError)
            [ctx] = exc_records.take()
            assert ctx["message"] == "Fatal write error on socket transport"
            assert await peer.read_until_eof() == b""

    run(loop, main())


# writelines() refusals with the running version's messages: 3.12 has its
# own writelines(); 3.11's is WriteTransport's b"".join() then write().
if PY312:
    WRITELINES_ERRORS = [
        ("['text']", TypeError,
         "memoryview: a bytes-like object is required, not 'str'"),
        ("[b'a', 42]", TypeError,
         "memoryview: a bytes-like object is required, not 'int'"),
        ("5", TypeError, "'int' object is not iterable"),
    ]
else:
    WRITELINES_ERRORS = [
        ("['text']", TypeError,
         "sequence item 0: expected a bytes-like object, str found"),
        ("[b'a', 42]", TypeError,
         "sequence item 1: expected a bytes-like object, int found"),
        ("5", TypeError, "can only join an iterable"),
        ("None", TypeError, "can only join an iterable"),
    ]


@pytest.mark.parametrize("arg,exc_type,message", WRITELINES_ERRORS,
                         ids=[a for a, _, _ in WRITELINES_ERRORS])
def test_writelines_bad_argument_raises_the_stdlib_error(loop, arg, exc_type,
                                                         message):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            with pytest.raises(exc_type) as info:
                tr.writelines(eval(arg))
            assert str(info.value) == message
            if PY312:
                tr.writelines(None)  # `if not list_of_data: return`
                tr.writelines([])
            tr.write(b"ok")
            assert await peer.read_at_least(2) == b"ok"
            await close_and_wait(tr, proto)

    run(loop, main())


def test_writelines_with_a_bad_item_writes_nothing(loop):
    """The stdlib checks every item before buffering any (its join):
    after the TypeError nothing of the call is sent, and the transport
    goes on working and closes normally."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            with pytest.raises(TypeError):
                tr.writelines([b"first", bytearray(b"-"), "oops"])
            assert tr.get_write_buffer_size() == 0
            tr.write(b"second")
            await close_and_wait(tr, proto)
            assert await peer.read_until_eof() == b"second"
            assert proto.lost_exc is None

    run(loop, main())


def test_write_after_write_eof_raises(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            assert tr.can_write_eof()
            tr.write(b"last")
            tr.write_eof()
            tr.write_eof()  # a second call is a no-op
            with pytest.raises(RuntimeError) as info:
                tr.write(b"more")
            assert str(info.value) == "Cannot call write() after write_eof()"
            with pytest.raises(RuntimeError) as info:
                tr.writelines([b"more"])
            assert str(info.value) == (
                "Cannot call writelines() after write_eof()" if PY312
                else "Cannot call write() after write_eof()")
            # The peer gets the data, then EOF; we can still read.
            assert await peer.read_until_eof() == b"last"
            assert not tr.is_closing()
            peer.send(b"reply")
            await proto.wait_bytes(5)
            assert proto.data == b"reply"
            await close_and_wait(tr, proto)
            assert proto.lost_exc is None

    run(loop, main())


def test_write_eof_waits_for_the_buffer(loop):
    """write_eof() with data still buffered shuts down the write side only
    after the buffer is sent."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            data = fill_pattern(BIG, seed=6)
            tr.write(data)
            assert tr.get_write_buffer_size() > 0
            tr.write_eof()
            with pytest.raises(RuntimeError):
                tr.write(b"x")
            assert await peer.read_until_eof() == data
            assert tr.get_write_buffer_size() == 0
            assert not proto.is_lost
            await close_and_wait(tr, proto)

    run(loop, main())


def test_half_close_eof_received_true_keeps_writing(loop):
    """eof_received() returning True keeps the transport open: it can still
    write, and closes only when asked."""
    async def main():
        tr, proto, peer = await connect(
            loop, lambda: RecordingProtocol(eof_result=True))
        with peer:
            peer.send(b"request")
            peer.sock.shutdown(socket.SHUT_WR)
            await proto.wait_eof()
            assert proto.events_summary() == ["made", "data", "eof"]
            assert proto.data == b"request"
            await spin(loop)
            assert not proto.is_lost
            assert not tr.is_closing()
            tr.write(b"response after eof")
            tr.write(b"\1" * 300_000)
            tr.close()
            got = await peer.read_until_eof()
            assert got == b"response after eof" + b"\1" * 300_000
            assert await proto.wait_lost() is None
            assert proto.events_summary() == ["made", "data", "eof", "lost"]

    run(loop, main())


@pytest.mark.parametrize("eof_result", [None, False])
def test_eof_received_false_closes(loop, eof_result):
    async def main():
        tr, proto, peer = await connect(
            loop, lambda: RecordingProtocol(eof_result=eof_result))
        with peer:
            peer.sock.shutdown(socket.SHUT_WR)
            assert await proto.wait_lost() is None
            assert proto.events_summary() == ["made", "eof", "lost"]
            assert tr.is_closing()
            assert await peer.read_until_eof() == b""

    run(loop, main())


# ------------------------------------------------------------ close / abort


def test_close_drains_the_buffer_first(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            data = fill_pattern(BIG, seed=7)
            tr.write(data)
            assert tr.get_write_buffer_size() > 0
            tr.close()
            assert tr.is_closing()
            assert not tr.is_reading()
            tr.close()  # idempotent
            await spin(loop)
            # connection_lost waits for the buffer to be written.
            assert not proto.is_lost
            got = await peer.read_until_eof()
            assert len(got) == len(data)
            assert got == data
            assert await proto.wait_lost() is None
            assert proto.events_summary() == ["made", "lost"]
            assert tr.get_write_buffer_size() == 0

    run(loop, main())


def test_close_with_empty_buffer(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            sock = tr.get_extra_info("socket")
            tr.write(b"small")
            tr.close()
            assert tr.is_closing()
            # connection_lost is scheduled, not called synchronously.
            assert not proto.is_lost
            assert sock.fileno() != -1
            assert await proto.wait_lost() is None
            assert await peer.read_until_eof() == b"small"
            assert proto.events == ["made", "lost"]
            # The socket is closed once connection_lost() has returned.
            assert sock.fileno() == -1

    run(loop, main())


def test_socket_still_open_in_connection_lost(loop):
    class Proto(RecordingProtocol):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            self.fileno_in_lost = \
                self.transport.get_extra_info("socket").fileno()

    async def main():
        tr, proto, peer = await connect(loop, Proto)
        with peer:
            fd = tr.get_extra_info("socket").fileno()
            tr.close()
            await proto.wait_lost()
            assert proto.fileno_in_lost == fd

    run(loop, main())


def test_write_is_sent_at_once(loop):
    """With nothing buffered, write() sends right away: the peer can read
    the data before the loop runs again."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.write(b"now")
            assert tr.get_write_buffer_size() == 0
            peer.sock.settimeout(10)
            assert peer.sock.recv(100) == b"now"
            tr.writelines([b"and ", b"now"])
            got = b""
            for _ in range(10):
                got += peer.sock.recv(100)
                if len(got) >= 7:
                    break
            assert got == b"and now"
            peer.sock.setblocking(False)
            await close_and_wait(tr, proto)

    run(loop, main())


def test_abort_drops_pending_data(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            data = fill_pattern(BIG, seed=8)
            tr.write(data)
            pending = tr.get_write_buffer_size()
            assert pending > 0
            tr.abort()
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            # connection_lost is called soon, with None, without waiting
            # for the peer to read anything.
            assert not proto.is_lost
            assert await proto.wait_lost() is None
            assert proto.events_summary() == ["made", "lost"]
            got = await peer.read_until_eof()
            assert len(got) <= len(data) - pending
            assert got == data[:len(got)]
            tr.abort()  # no-op now
            tr.close()  # no-op now
            await spin(loop)
            assert proto.events_summary() == ["made", "lost"]

    run(loop, main())


def test_connection_lost_once_after_close_and_abort(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.close()
            tr.abort()
            tr.close()
            await proto.wait_lost()
            await spin(loop)
            assert proto.events_summary() == ["made", "lost"]
            assert proto.lost_exc is None

    run(loop, main())


def test_connection_made_before_connection_lost_when_closed_at_once(loop):
    """A transport closed right after create_connection() returns still
    calls connection_made first, then connection_lost once."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            assert proto.events_summary() == ["made"]
            tr.close()
            await proto.wait_lost()
            assert proto.events_summary() == ["made", "lost"]

    run(loop, main())


def test_peer_close_gives_eof_then_connection_lost_none(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        peer.send(b"bye")
        peer.close()
        assert await proto.wait_lost() is None
        assert proto.events_summary() == ["made", "data", "eof", "lost"]
        assert proto.data == b"bye"

    run(loop, main())


def test_peer_reset_mid_write(loop):
    """The peer resets the connection (SO_LINGER 0) while we have data
    buffered: connection_lost gets the ConnectionResetError and the buffer
    is dropped; nothing goes to the exception handler."""
    async def main():
        tr, proto, peer = await connect(loop)
        tr.write(b"\0" * BIG)
        assert tr.get_write_buffer_size() > 0
        set_linger_reset(peer.sock)
        peer.close()
        exc = await proto.wait_lost()
        assert isinstance(exc, ConnectionResetError), repr(exc)
        assert proto.events_summary() == ["made", "lost"]
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0

    run(loop, main())


def test_peer_reset_while_reading(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        peer.send(b"data")
        await proto.wait_bytes(4)
        set_linger_reset(peer.sock)
        peer.close()
        exc = await proto.wait_lost()
        assert isinstance(exc, ConnectionResetError), repr(exc)
        assert proto.events_summary() == ["made", "data", "lost"]

    run(loop, main())


# ------------------------------------------------------------------ reading


def test_pause_and_resume_reading(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            peer.send(b"first")
            await proto.wait_bytes(5)
            assert tr.is_reading()
            tr.pause_reading()
            assert not tr.is_reading()
            tr.pause_reading()  # idempotent
            assert not tr.is_reading()
            peer.send(b"second")
            await spin(loop, 10, 0.01)
            assert proto.data == b"first"
            tr.resume_reading()
            assert tr.is_reading()
            tr.resume_reading()  # idempotent
            await proto.wait_bytes(11)
            assert proto.data == b"firstsecond"
            assert proto.data_while_paused == 0
            # EOF is not reported while paused either.
            tr.pause_reading()
            peer.sock.shutdown(socket.SHUT_WR)
            await spin(loop, 10, 0.01)
            assert "eof" not in proto.events
            tr.resume_reading()
            await proto.wait_lost()
            assert proto.events_summary() == ["made", "data", "eof", "lost"]
            assert not tr.is_reading()

    run(loop, main())


@pytest.mark.parametrize("action", ["pause_reading", "close"])
def test_no_read_after_pause_or_close_in_the_iteration_data_came(loop,
                                                                 action):
    """pause_reading() or close() (with data still unsent) runs before the
    read its iteration's poll found: the stdlib cancels that reader Handle,
    so no data_received() follows."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            if action == "close":
                peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                     4096)
                tr.write(b"z" * BIG)  # more than the kernel takes
                assert tr.get_write_buffer_size() > 0
            peer.send(b"x")
            # Queued now: runs before the next poll's events.
            loop.call_soon(getattr(tr, action))
            await spin(loop, 10, 0.01)
            assert proto.data == b""
            assert proto.events_summary() == ["made"]
            if action == "pause_reading":
                tr.resume_reading()
                await proto.wait_bytes(1)
                assert proto.data_while_paused == 0
            tr.abort()
            await proto.wait_lost()

    run(loop, main())


def test_pause_reading_in_connection_made(loop):
    """Reading starts after connection_made(): pausing there means no
    data_received() until resume_reading()."""
    class Proto(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        tr, proto, peer = await connect(loop, Proto)
        with peer:
            assert not tr.is_reading()
            peer.send(b"early")
            await spin(loop, 10, 0.01)
            assert proto.data == b""
            tr.resume_reading()
            await proto.wait_bytes(5)
            assert proto.data == b"early"
            await close_and_wait(tr, proto)

    run(loop, main())


def test_is_reading_after_close(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.pause_reading()
            tr.close()
            assert not tr.is_reading()
            tr.resume_reading()  # ignored once closing
            assert not tr.is_reading()
            await proto.wait_lost()
            assert not tr.is_reading()

    run(loop, main())


def test_large_read_in_several_data_received(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            data = fill_pattern(3_000_000, seed=9)
            view = memoryview(data)
            pos = 0

            def send_more():
                nonlocal pos
                try:
                    pos += peer.sock.send(view[pos:])
                except BlockingIOError:
                    pass
                if pos == len(data):
                    loop.remove_writer(peer.sock.fileno())
                    peer.sock.shutdown(socket.SHUT_WR)

            loop.add_writer(peer.sock.fileno(), send_more)
            await proto.wait_lost()
            assert proto.data == data
            assert proto.lost_exc is None
            # Each read is at most the stdlib's max_size (256 KiB).
            assert proto.events.count("data") >= len(data) // (256 * 1024)

    run(loop, main())


class CheckingEcho(asyncio.Protocol, Notifier):
    """Echoes each read, after ReceivedBytes has checked and kept it."""

    def __init__(self):
        self.received = ReceivedBytes()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received.take(data)
        self.transport.write(data)
        self._notify()


def test_received_bytes_stay_intact_and_fresh(loop):
    """Reads delivered one after the other, each echoed: the ones a
    protocol keeps (directly or through a memoryview) still hold their own
    data after later reads of the same size, and each one hashes and
    sizes as a new bytes object would."""
    async def main():
        tr, proto, peer = await connect(loop, CheckingEcho)
        with peer:
            sent, total = [], 0
            for i, size in enumerate(RECEIVED_SIZES):
                msg = bytes([i + 1]) * size
                sent.append(msg)
                peer.send(msg)
                total += size
                await peer.read_at_least(total)
                assert proto.received.count == i + 1  # one read each
            assert bytes(peer.data) == b"".join(sent)
            proto.received.check(sent)
            tr.close()

    run(loop, main())


@pytest.mark.parametrize("kind", ["stream", "datagram"])
def test_read_ready_called_directly_outlives_a_dropped_loop(loop_factory,
                                                             kind):
    """transport._read_ready() called outside the loop (the stdlib's own
    code and test helpers call it), whose protocol ends the connection and
    drops the last reference to the loop: the read completes (under the
    sanitizer build, without touching the freed loop)."""
    got = []

    class Dropping(asyncio.Protocol, asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def _drop(self, data):
            nonlocal loop
            got.append(len(data))  # keeping data would keep it from reuse
            self.transport.abort()
            loop.run_until_complete(asyncio.sleep(0))  # connection_lost
            self.transport = None
            loop.close()
            loop = None

        data_received = _drop

        def datagram_received(self, data, addr):
            self._drop(data)

    loop = loop_factory()
    kind_args = ((socket.AF_UNIX, socket.SOCK_STREAM) if kind == "stream"
                 else (socket.AF_UNIX, socket.SOCK_DGRAM))
    a, b = socket.socketpair(*kind_args)
    try:
        make = (loop.create_connection if kind == "stream"
                else loop.create_datagram_endpoint)
        tr, _ = loop.run_until_complete(make(Dropping, sock=a))
        del make  # a bound method: it holds the loop
        loop.run_until_complete(asyncio.sleep(0))
        b.send(b"x" * 1000)
        gc.collect()  # the set-up's cycles: nothing but `loop` holds it
        gc.disable()  # freed by reference counting, at once
        try:
            tr._read_ready()
        finally:
            gc.enable()
        assert got == [1000]
        assert loop is None
    finally:
        b.close()
        if loop is not None:
            loop.close()


# ------------------------------------------------------------ flow control


def test_max_size_is_the_read_size(loop, exc_records):
    """The stdlib reads with recv(self.max_size): 256 KiB by default, and
    code may set it per transport (smaller reads); a negative one is a
    fatal read error (recv's ValueError)."""
    chunks = []

    class Chunks(RecordingProtocol):
        def data_received(self, data):
            chunks.append(len(data))
            super().data_received(data)

    async def main():
        tr, proto, peer = await connect(loop, Chunks)
        with peer:
            assert tr.max_size == 256 * 1024
            tr.max_size = 10
            assert tr.max_size == 10
            peer.send(b"x" * 35)
            await proto.wait_bytes(35)
            assert chunks == [10, 10, 10, 5]
            tr.max_size = -1
            peer.send(b"y")
            exc = await proto.wait_lost()
            assert isinstance(exc, ValueError)
            [ctx] = exc_records.take()
            assert ctx["message"] == "Fatal read error on socket transport"

    run(loop, main())


def test_write_buffer_limits_defaults_and_validation(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            # (low, high): 16 KiB / 64 KiB
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            tr.set_write_buffer_limits(high=1000)
            assert tr.get_write_buffer_limits() == (250, 1000)
            tr.set_write_buffer_limits(low=100)
            assert tr.get_write_buffer_limits() == (100, 400)
            tr.set_write_buffer_limits(high=300, low=200)
            assert tr.get_write_buffer_limits() == (200, 300)
            tr.set_write_buffer_limits(high=0, low=0)
            assert tr.get_write_buffer_limits() == (0, 0)
            tr.set_write_buffer_limits()
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            tr.set_write_buffer_limits(100, 100)  # positional: high, low
            assert tr.get_write_buffer_limits() == (100, 100)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=-1)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=10, low=-1)
            # A failed call changes nothing.
            assert tr.get_write_buffer_limits() == (100, 100)
            assert proto.paused_sizes == []
            await close_and_wait(tr, proto)

    run(loop, main())


def test_write_buffer_limits_keep_what_was_set(loop):
    """The stdlib stores the limits as given: floats, Fractions, ints past
    any buffer size.  Each acts as the comparison with it does: a buffer
    pauses when its size is above the limit."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.set_write_buffer_limits(high=1e6)
            assert tr.get_write_buffer_limits() == (250000.0, 1e6)
            assert type(tr.get_write_buffer_limits()[0]) is float
            tr.set_write_buffer_limits(high=2**70, low=Fraction(7, 2))
            assert tr.get_write_buffer_limits() == (Fraction(7, 2), 2**70)
            tr.set_write_buffer_limits(high=math.inf, low=0)
            assert tr.get_write_buffer_limits() == (0, math.inf)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=math.nan)
            with pytest.raises(ValueError):  # low = inf // 4 is nan
                tr.set_write_buffer_limits(high=math.inf)
            tr.write(b"\0" * BIG)
            size = tr.get_write_buffer_size()
            assert size > 0 and proto.events == ["made"]
            tr.set_write_buffer_limits(high=size + 0.5, low=0)
            tr.set_write_buffer_limits(high=Fraction(2 * size, 2), low=0)
            assert proto.events == ["made"]
            tr.set_write_buffer_limits(high=size - 0.5, low=size - 1.5)
            assert proto.events == ["made", "pause_writing"]
            # Resumes once the buffer is at or below size - 1.5.
            await peer.read_at_least(BIG)
            await proto.wait(lambda: proto.resumed_sizes,
                             what="resume_writing")
            assert proto.resumed_sizes[0] <= size - 1.5
            assert proto.events == ["made", "pause_writing", "resume_writing"]
            await close_and_wait(tr, proto)

    run(loop, main())


def test_get_write_buffer_size(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            assert tr.get_write_buffer_size() == 0
            tr.write(b"small")  # sent at once
            assert tr.get_write_buffer_size() == 0
            tr.write(b"\0" * BIG)
            size = tr.get_write_buffer_size()
            assert 0 < size < BIG
            tr.write(b"12345")
            assert tr.get_write_buffer_size() == size + 5
            tr.writelines([b"ab", b"cd"])
            # (3.12+ writelines() also tries to send at once)
            assert 0 < tr.get_write_buffer_size() <= size + 9
            await peer.read_at_least(5 + BIG + 9)
            await proto.wait(lambda: tr.get_write_buffer_size() == 0)
            await close_and_wait(tr, proto)

    run(loop, main())


def test_pause_and_resume_writing_at_water_marks(loop):
    high, low = 200_000, 50_000

    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.set_write_buffer_limits(high=high, low=low)
            tr.write(b"\0" * BIG)
            # pause_writing() is called from within write().
            assert proto.events == ["made", "pause_writing"]
            assert proto.paused_sizes[0] > high
            # More writes while paused do not call it again.
            tr.write(b"\1" * 1000)
            tr.writelines([b"\2" * 1000])
            assert proto.events == ["made", "pause_writing"]
            await peer.read_at_least(BIG + 2000)
            await proto.wait(lambda: "resume_writing" in proto.events)
            assert proto.events == ["made", "pause_writing",
                                    "resume_writing"]
            assert proto.resumed_sizes[0] <= low
            # Below the high-water mark: no pause.
            tr.write(b"\3" * 100)
            assert proto.events[-1] == "resume_writing"
            await close_and_wait(tr, proto)

    run(loop, main())


def test_pause_writing_exactly_above_high_water(loop):
    """The protocol is paused when the buffer is strictly above the high
    water mark, and resumed when it is at or below the low one."""
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.write(b"\0" * BIG)  # fills the kernel buffers
            size = tr.get_write_buffer_size()
            assert size > 0
            assert proto.events == ["made", "pause_writing"]  # 64 KiB
            await peer.read_at_least(BIG)
            await proto.wait(lambda: "resume_writing" in proto.events)
            # Fill again; now choose the limits around the buffer size.
            tr.set_write_buffer_limits(high=10**9)
            tr.write(b"\0" * BIG)
            size = tr.get_write_buffer_size()
            assert size > 10
            tr.set_write_buffer_limits(high=size, low=0)
            assert proto.events.count("pause_writing") == 1  # size <= high
            tr.set_write_buffer_limits(high=size - 1, low=0)
            # set_write_buffer_limits() checks at once.
            assert proto.events.count("pause_writing") == 2
            await peer.read_at_least(2 * BIG)
            await proto.wait(lambda: proto.events.count("resume_writing") == 2)
            assert proto.resumed_sizes[-1] == 0
            await close_and_wait(tr, proto)

    run(loop, main())


class FailingFlowProtocol(RecordingProtocol):
    def pause_writing(self):
        super().pause_writing()
        raise ZeroDivisionError("pause")

    def resume_writing(self):
        super().resume_writing()
        raise ValueError("resume")


def test_pause_writing_error_goes_to_exception_handler(loop, exc_records):
    async def main():
        tr, proto, peer = await connect(loop, FailingFlowProtocol)
        with peer:
            tr.write(b"\0" * BIG)
            assert proto.events == ["made", "pause_writing"]
            records = exc_records.take()
            assert len(records) == 1
            ctx = records[0]
            assert ctx["message"] == "protocol.pause_writing() failed"
            assert isinstance(ctx["exception"], ZeroDivisionError)
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            # The transport is not closed by it.
            assert not tr.is_closing()
            await peer.read_at_least(BIG)
            await proto.wait(lambda: "resume_writing" in proto.events)
            await spin(loop)
            records = exc_records.take()
            assert len(records) == 1
            ctx = records[0]
            assert ctx["message"] == "protocol.resume_writing() failed"
            assert isinstance(ctx["exception"], ValueError)
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            assert not tr.is_closing()
            tr.write(b"still works")
            await peer.read_at_least(BIG + 11)
            await close_and_wait(tr, proto)

    run(loop, main())


def test_writes_after_connection_lost_warn_after_five(loop, caplog):
    async def main():
        tr, proto, peer = await connect(loop)
        set_linger_reset(peer.sock)
        peer.close()
        await proto.wait_lost()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(4):
                tr.write(b"lost")
            assert [r for r in caplog.records
                    if "socket.send() raised exception." in r.getMessage()
                    ] == []
            tr.write(b"lost")
            tr.write(b"lost")
        warnings_ = [r for r in caplog.records
                     if r.getMessage() == "socket.send() raised exception."]
        assert len(warnings_) == 2
        assert all(r.name == "asyncio" and r.levelno == logging.WARNING
                   for r in warnings_)
        # Writes after connection_lost raise nothing.
        assert proto.events == ["made", "lost"]

    run(loop, main())


def test_writes_after_close_are_ignored(loop, caplog):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            tr.close()
            await proto.wait_lost()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(4):
                    tr.write(b"ignored")
            assert not [r for r in caplog.records if r.name == "asyncio"]
            assert tr.get_write_buffer_size() == 0
            assert await peer.read_until_eof() == b""

    run(loop, main())


# ------------------------------------------------------------ set_protocol


def test_set_protocol(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            assert tr.get_protocol() is proto
            peer.send(b"one")
            await proto.wait_bytes(3)
            new = RecordingProtocol()
            new.events.append("made")  # not called again by the transport
            new.transport = tr
            tr.set_protocol(new)
            assert tr.get_protocol() is new
            peer.send(b"two")
            await new.wait_bytes(3)
            assert proto.data == b"one"
            assert new.data == b"two"
            peer.close()
            await new.wait_lost()
            assert new.events_summary() == ["made", "data", "eof", "lost"]
            assert proto.events_summary() == ["made", "data"]

    run(loop, main())


def test_set_protocol_switch_to_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.data = bytearray()
            self.hints = []
            self.lost = loop.create_future()

        def get_buffer(self, sizehint):
            self.hints.append(sizehint)
            return self.buf

        def buffer_updated(self, nbytes):
            self.data += self.buf[:nbytes]

        def eof_received(self):
            return None

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            peer.send(b"to protocol")
            await proto.wait_bytes(11)
            new = Buffered()
            tr.set_protocol(new)
            peer.send(b"x" * 250)
            peer.close()
            assert await asyncio.wait_for(new.lost, 30) is None
            assert new.data == b"x" * 250
            assert set(new.hints) == {-1}
            assert proto.data == b"to protocol"

    run(loop, main())


# ------------------------------------------------ writes inside data_received
#
# A reply written in pieces from data_received() must look exactly as if
# each write() had been sent at once (aloop sends the pieces together when
# data_received() returns; the benchmarks measure why).


class ReplyingProtocol(RecordingProtocol):
    """Runs `reply(transport)` from data_received(); records the write
    buffer size and the flow-control events seen before it returned."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply
        self.seen = []

    def data_received(self, data):
        super().data_received(data)
        self.seen.append(self.reply(self.transport))


class BufferedReplying(asyncio.BufferedProtocol):
    def __init__(self, reply):
        self.reply = reply
        self.buf = bytearray(256)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.reply(self.transport)


def split_reply(tr):
    tr.write(b"HTTP/1.1 200 OK\r\n")
    tr.write(bytearray(b"Content-Length: 4\r\n\r\n"))
    tr.writelines([b"bo", memoryview(b"dy")])
    return tr.get_write_buffer_size()


@pytest.mark.parametrize("kind", ["protocol", "buffered"])
def test_pieces_written_in_data_received_arrive_in_order(loop, kind):
    async def main():
        factory = (lambda: ReplyingProtocol(split_reply)) \
            if kind == "protocol" else (lambda: BufferedReplying(split_reply))
        tr, proto, peer = await connect(loop, factory)
        with peer:
            expected = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
            for i in range(1, 4):
                peer.send(b"GET")
                got = await peer.read_at_least(i * len(expected))
                assert got == expected * i
            tr.close()
            assert await peer.read_until_eof() == expected * 3

    run(loop, main())


def test_write_buffer_size_in_data_received_is_what_the_kernel_left(loop):
    """Small writes fit in the socket buffer: the buffer size seen right
    after them, inside data_received(), is 0 as with an immediate send."""
    async def main():
        tr, proto, peer = await connect(
            loop, lambda: ReplyingProtocol(split_reply))
        with peer:
            peer.send(b"GET")
            await peer.read_at_least(42)
            assert proto.seen == [0]
            await close_and_wait(tr, proto)

    run(loop, main())


@pytest.mark.parametrize("then", ["abort", "close", "write_eof", "raise"])
def test_data_written_before_ending_in_data_received_is_sent(
        loop, exc_records, then):
    """write() then abort()/close()/write_eof()/an exception, all inside
    data_received(): what was written reaches the peer, then EOF."""
    def reply(tr):
        tr.write(b"last ")
        tr.write(b"words")
        if then == "raise":
            raise ZeroDivisionError("after writing")
        getattr(tr, then)()

    async def main():
        tr, proto, peer = await connect(loop, lambda: ReplyingProtocol(reply))
        with peer:
            peer.send(b"x")
            assert await peer.read_until_eof() == b"last words"
            if then == "write_eof":
                assert not tr.is_closing()
                assert tr.is_reading()
                await close_and_wait(tr, proto)
            else:
                exc = await proto.wait_lost()
                assert tr.is_closing()
            if then == "raise":
                assert isinstance(exc, ZeroDivisionError)
                [ctx] = exc_records.take()
                assert ctx["message"] == \
                    "Fatal error: protocol.data_received() call failed."
            else:
                assert exc_records.take() == []
            assert proto.events_summary() == ["made", "data", "lost"]

    run(loop, main())


def test_close_in_data_received_after_write_orders_callbacks(loop):
    """close() after a write inside data_received(): connection_lost comes
    later, from the loop, after callbacks already queued."""
    order = []

    def reply(tr):
        tr.write(b"bye")
        asyncio.get_running_loop().call_soon(order.append, "queued")
        tr.close()
        order.append("closed")

    class Proto(ReplyingProtocol):
        def connection_lost(self, exc):
            order.append("lost")
            super().connection_lost(exc)

    async def main():
        tr, proto, peer = await connect(loop, lambda: Proto(reply))
        with peer:
            peer.send(b"x")
            await proto.wait_lost()
            assert order == ["closed", "queued", "lost"]
            assert await peer.read_until_eof() == b"bye"

    run(loop, main())


def test_big_write_in_data_received_pauses_before_write_returns(loop):
    """A write above the high-water mark that the kernel cannot take
    calls pause_writing() from inside write(), as an immediate send
    does; all of it arrives."""
    data = fill_pattern(BIG, seed=11)

    def reply(tr):
        tr.write(b"head")
        tr.write(data)
        return list(tr._protocol.events[-1:]), tr.get_write_buffer_size()

    async def main():
        tr, proto, peer = await connect(loop, lambda: ReplyingProtocol(reply))
        with peer:
            peer.send(b"x")
            got = await peer.read_at_least(len(data) + 4)
            assert got == b"head" + data
            [(last_event, size)] = proto.seen
            assert last_event == ["pause_writing"]
            assert 0 < size <= len(data)
            assert proto.paused_sizes and proto.resumed_sizes
            await close_and_wait(tr, proto)

    run(loop, main())


# ---------------------------------------------------------- protocol errors


@pytest.mark.parametrize("where", ["data_received", "eof_received"])
def test_protocol_error_is_fatal(loop, exc_records, where):
    """An exception from data_received()/eof_received() goes to the
    exception handler as 'Fatal error: protocol.X() call failed.', and the
    transport is closed with connection_lost(exc)."""
    class Failing(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            if where == "data_received":
                raise ZeroDivisionError(where)

        def eof_received(self):
            super().eof_received()
            if where == "eof_received":
                raise ZeroDivisionError(where)

    async def main():
        tr, proto, peer = await connect(loop, Failing)
        with peer:
            peer.send(b"data")
            if where == "eof_received":
                peer.sock.shutdown(socket.SHUT_WR)
            exc = await proto.wait_lost()
            assert isinstance(exc, ZeroDivisionError)
            assert tr.is_closing()
            records = exc_records.take()
            assert len(records) == 1, records
            ctx = records[0]
            assert ctx["message"] == \
                f"Fatal error: protocol.{where}() call failed."
            assert ctx["exception"] is exc
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            # The socket is closed.
            assert await peer.read_until_eof() == b""

    run(loop, main())


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, fail=None):
        self.fail = fail
        self.buf = bytearray(64)
        self.data = bytearray()
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        if self.fail == "get_buffer":
            raise ZeroDivisionError("get_buffer")
        if self.fail == "empty buffer":
            return bytearray()
        if self.fail == "no len":
            return 64
        if self.fail == "read-only buffer":
            return b"x" * 64
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        if self.fail == "buffer_updated":
            raise ZeroDivisionError("buffer_updated")

    def connection_lost(self, exc):
        self.lost = asyncio.get_running_loop().create_future()
        self.lost.set_result(exc)


@pytest.mark.parametrize("fail", ["get_buffer", "empty buffer", "no len",
                                  "read-only buffer", "buffer_updated"])
def test_buffered_protocol_error_is_fatal(loop, exc_records, fail):
    """What get_buffer() returns must have a len() and take recv_into():
    the first failure is the protocol's, the second a read error (its
    TypeError, as the stdlib's sock.recv_into raises it)."""
    async def main():
        tr, proto, peer = await connect(loop, lambda: BufferedRecorder(fail))
        with peer:
            peer.send(b"data")
            await Notifier().wait(lambda: proto.lost is not None, poll=0.005,
                                  what="connection_lost")
            exc = proto.lost.result()
            records = exc_records.take()
            assert len(records) == 1, records
            ctx = records[0]
            message = f"Fatal error: protocol.{fail}() call failed."
            if fail == "empty buffer":
                assert isinstance(exc, RuntimeError)
                assert "empty buffer" in str(exc)
                message = "Fatal error: protocol.get_buffer() call failed."
            elif fail == "no len":
                assert isinstance(exc, TypeError)
                assert "has no len()" in str(exc)
                message = "Fatal error: protocol.get_buffer() call failed."
            elif fail == "read-only buffer":
                assert isinstance(exc, TypeError)
                assert "read-write bytes-like object" in str(exc)
                message = "Fatal read error on socket transport"
            else:
                assert isinstance(exc, ZeroDivisionError)
            assert ctx["message"] == message
            assert ctx["exception"] is exc
            assert ctx["transport"] is tr
            assert ctx["protocol"] is proto
            if fail == "buffer_updated":
                assert proto.data == b"data"
            else:
                assert proto.data == b""
            assert await peer.read_until_eof() == b""

    run(loop, main())


def test_protocol_without_data_received(loop, exc_records):
    """A protocol with no data_received (nor get_buffer) is accepted; its
    first read fails with AttributeError as a protocol error, and a method
    added later is found (the stdlib looks it up per read)."""
    class NoData(asyncio.BaseProtocol):
        lost = None

        def connection_made(self, transport):
            self.transport = transport

        def connection_lost(self, exc):
            self.lost = asyncio.get_running_loop().create_future()
            self.lost.set_result(exc)

    class Late(NoData):
        pass

    async def main():
        tr, proto, peer = await connect(loop, NoData)
        with peer:
            peer.send(b"data")
            await Notifier().wait(lambda: proto.lost is not None, poll=0.005,
                                  what="connection_lost")
            exc = proto.lost.result()
            assert isinstance(exc, AttributeError)
            assert "data_received" in str(exc)
            [ctx] = exc_records.take()
            assert ctx["message"] == \
                "Fatal error: protocol.data_received() call failed."
            assert ctx["exception"] is exc
            assert await peer.read_until_eof() == b""
        tr, proto, peer = await connect(loop, Late)
        with peer:
            got = []
            proto.data_received = got.append
            peer.send(b"late")
            await Notifier().wait(lambda: got, poll=0.005, what="data")
            assert got == [b"late"]
            tr.close()
            await Notifier().wait(lambda: proto.lost is not None, poll=0.005,
                                  what="connection_lost")

    run(loop, main())


@pytest.mark.parametrize("how", ["close", "close with data", "abort"])
def test_connection_lost_error_goes_to_exception_handler(loop, exc_records,
                                                         how):
    """connection_lost() runs from a loop callback (after close() drains
    the buffer, from the writer callback itself): its exception goes to the
    exception handler like any callback's, with the Handle, and the loop
    and the caller go on; the socket is closed all the same."""
    class Failing(RecordingProtocol):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ZeroDivisionError("lost")

    async def main():
        tr, proto, peer = await connect(loop, Failing)
        with peer:
            if how == "close with data":
                tr.write(b"z" * BIG)
                assert tr.get_write_buffer_size() > 0
                peer.start_reading()
            tr.abort() if how == "abort" else tr.close()
            await proto.wait_lost()
            await Notifier().wait(lambda: exc_records.records, poll=0.005,
                                  what="exception handler")
            records = exc_records.take()
            assert len(records) == 1, records
            assert records[0]["message"].startswith("Exception in callback")
            assert isinstance(records[0]["exception"], ZeroDivisionError)
            assert isinstance(records[0]["handle"], asyncio.Handle)
            await peer.read_until_eof()
            await spin(loop)
            assert proto.events_summary() == ["made", "lost"]
            return "went on"

    assert run(loop, main()) == "went on"


def test_connection_made_error_goes_to_exception_handler(loop, exc_records):
    """connection_made() is a call_soon() callback in the stdlib: its
    exception is reported as that Handle's, naming the method, and the
    connection stays usable."""
    class Failing(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("made")

    async def main():
        tr, proto, peer = await connect(loop, Failing)
        with peer:
            await Notifier().wait(lambda: exc_records.records, poll=0.005,
                                  what="exception handler")
            [ctx] = exc_records.take()
            assert ctx["message"].startswith(
                "Exception in callback "
                "test_connection_made_error_goes_to_exception_handler."
                "<locals>.Failing.connection_made("), ctx["message"]
            assert isinstance(ctx["exception"], ZeroDivisionError)
            assert isinstance(ctx["handle"], asyncio.Handle)
            peer.send(b"still")
            await proto.wait_bytes(5)
            await close_and_wait(tr, proto)

    run(loop, main())


# --------------------------------------------------------------------- GC


def test_unclosed_transport_resource_warning(loop):
    async def main():
        tr, proto, peer = await connect(loop)
        with peer:
            # While reading, the loop keeps the transport alive; stop
            # reading so that nothing but us refers to it.
            tr.pause_reading()
            await spin(loop)
            proto.transport = None
            del proto
            tr_id = id(tr)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                del tr
                gc.collect()
                gc.collect()
            found = [w for w in caught
                     if issubclass(w.category, ResourceWarning)
                     and "unclosed transport" in str(w.message)]
            assert found, [str(w.message) for w in caught]
            # source=self, so tracemalloc can say where it was allocated
            assert id(found[0].source) == tr_id
            del found, caught
            # ... and the socket was closed: the peer sees EOF.
            assert await peer.read_until_eof() == b""

    run(loop, main())
