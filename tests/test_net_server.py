"""Servers: create_server / create_unix_server and the Server object, the
accept machinery under them, connect_accepted_socket."""

import asyncio
import gc
import os
import socket
import sys

import pytest

from _net_support import (BIG, EchoProtocol, LOCALHOST4, LOCALHOST6, RawPeer,
                          RecordingProtocol, Notifier, listener, run, spin,
                          unix_dir, unix_path)  # noqa: F401 (fixtures)


class Tracker(Notifier):
    """Records the server-side protocols a server creates."""

    def __init__(self, cls=RecordingProtocol, **kwargs):
        self.cls = cls
        self.kwargs = kwargs
        self.protocols = []

    def __call__(self):
        proto = self.cls(**self.kwargs)
        self.protocols.append(proto)
        self._notify()
        return proto

    async def wait_count(self, n):
        await self.wait(lambda: len(self.protocols) >= n, poll=0.001,
                        what=f"{n} server protocols")
        for proto in self.protocols[:n]:
            await proto.wait_made()


async def echo_once(loop, addr, payload=b"ping", family=socket.AF_INET):
    """Connect with a plain socket (read with add_reader), send, wait for
    the echo; return the echoed data."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(addr)  # completed by the kernel's accept queue
    except BaseException:
        sock.close()
        raise
    with RawPeer(loop, sock) as peer:  # unregisters before closing
        peer.send(payload)
        return await peer.read_at_least(len(payload))


def connect_refused(addr, family=socket.AF_INET):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        with pytest.raises(ConnectionRefusedError):
            sock.connect(addr)
    finally:
        sock.close()


# ------------------------------------------------------------------ basics


def test_server_basics(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert isinstance(server, asyncio.Server)
        assert server.get_loop() is loop
        assert server.is_serving()
        socks = server.sockets
        assert isinstance(socks, tuple) and len(socks) == 1
        sock = socks[0]
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
        addr = sock.getsockname()
        assert addr[0] == LOCALHOST4 and addr[1] != 0
        assert "sockets=" in repr(server)

        assert await echo_once(loop, addr, b"hello") == b"hello"
        assert await echo_once(loop, addr, b"again") == b"again"

        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # idempotent
        await asyncio.wait_for(server.wait_closed(), 30)
        # The listening socket is closed: nobody accepts any more.
        connect_refused(addr)

    run(loop, main())


def test_server_many_sequential_connections(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0)
        async with server:
            addr = server.sockets[0].getsockname()
            for i in range(50):
                msg = b"msg %d" % i
                assert await echo_once(loop, addr, msg) == msg

    run(loop, main())


def test_server_accepts_a_burst(loop):
    """All the connections waiting in the accept queue are accepted, also
    when they are more than one accept round takes (at most `backlog`).
    Linux queues backlog + 1 connections."""
    backlog = 10

    async def main():
        tracker = Tracker()
        server = await loop.create_server(tracker, LOCALHOST4, 0,
                                          backlog=backlog)
        async with server:
            addr = server.sockets[0].getsockname()
            clients = []
            try:
                # Queued by the kernel before the loop runs again.
                for _ in range(backlog + 1):
                    clients.append(socket.create_connection(addr,
                                                            timeout=10))
                await tracker.wait_count(backlog + 1)
                for proto in tracker.protocols:
                    assert proto.events == ["made"]
            finally:
                for s in clients:
                    s.close()
            for proto in tracker.protocols:
                assert await proto.wait_lost() is None

    run(loop, main())


def test_async_with_closes_the_server(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0)
        async with server as srv:
            assert srv is server
            assert server.is_serving()
            addr = server.sockets[0].getsockname()
        assert not server.is_serving()
        assert server.sockets == ()
        connect_refused(addr)

    run(loop, main())


def test_close_keeps_established_connections(loop):
    async def main():
        tracker = Tracker(EchoProtocol)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        addr = server.sockets[0].getsockname()
        sock = socket.create_connection(addr, timeout=10)
        sock.setblocking(False)
        peer = RawPeer(loop, sock)
        with peer:
            peer.send(b"before")
            await peer.read_at_least(6)
            server.close()
            assert not server.is_serving()
            connect_refused(addr)
            # The established connection is still served.
            peer.send(b"after")
            assert await peer.read_at_least(11) == b"beforeafter"
        await asyncio.wait_for(server.wait_closed(), 30)

    run(loop, main())


def test_wait_closed_waits_for_connections(loop):
    """wait_closed() after close(): 3.12.1+ waits until every connection
    is closed; 3.11 returns at once (the historical behaviour)."""
    async def main():
        tracker = Tracker()
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        addr = server.sockets[0].getsockname()
        sock = socket.create_connection(addr, timeout=10)
        await tracker.wait_count(1)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await spin(loop, 10, 0.01)
        if sys.version_info >= (3, 12):
            assert not waiter.done()
            sock.close()
            await asyncio.wait_for(waiter, 30)
            assert tracker.protocols[0].is_lost
        else:
            assert waiter.done()
            await waiter
            sock.close()
            await tracker.protocols[0].wait_lost()
        # And once everything is closed it returns at once.
        await asyncio.wait_for(server.wait_closed(), 30)

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="3.11's wait_closed() returns at once once the "
                           "server is closed, whatever the connections")
def test_wait_closed_before_close(loop):
    """wait_closed() called on a serving server waits for close() and for
    the connections to be dropped (3.12.1+)."""
    async def main():
        tracker = Tracker()
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        addr = server.sockets[0].getsockname()
        waiter = asyncio.ensure_future(server.wait_closed())
        sock = socket.create_connection(addr, timeout=10)
        await tracker.wait_count(1)
        await spin(loop)
        assert not waiter.done()
        server.close()
        await spin(loop)
        assert not waiter.done()
        tracker.protocols[0].transport.close()
        await asyncio.wait_for(waiter, 30)
        sock.close()

    run(loop, main())


# ---------------------------------------------------------- start_serving


def test_start_serving_false(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0,
                                          start_serving=False)
        try:
            assert not server.is_serving()
            addr = server.sockets[0].getsockname()
            # Bound but not listening yet.
            connect_refused(addr)
            await server.start_serving()
            assert server.is_serving()
            assert await echo_once(loop, addr) == b"ping"
            await server.start_serving()  # no-op when serving
            assert server.is_serving()
            assert await echo_once(loop, addr) == b"ping"
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())


def test_serve_forever_cancellation(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0,
                                          start_serving=False)
        addr = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await spin(loop, 3)
        assert server.is_serving()
        assert await echo_once(loop, addr) == b"ping"
        with pytest.raises(RuntimeError, match="serve_forever"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        connect_refused(addr)
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    run(loop, main())


def test_serve_forever_stopped_by_close(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0)
        task = asyncio.ensure_future(server.serve_forever())
        await spin(loop, 3)
        server.close()
        # close() cancels the serve_forever() future.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        assert not server.is_serving()

    run(loop, main())


# -------------------------------------------------- close/abort clients


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="Server.close_clients() is new in 3.13")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(loop, how):
    class Writer(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"\0" * BIG)

    async def main():
        tracker = Tracker(Writer)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        addr = server.sockets[0].getsockname()
        peers = []
        for _ in range(2):
            sock = socket.create_connection(addr, timeout=10)
            peers.append(RawPeer(loop, sock))
        await tracker.wait_count(2)
        for proto in tracker.protocols:
            assert proto.transport.get_write_buffer_size() > 0
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await spin(loop)
        assert not waiter.done()
        getattr(server, how)()
        for proto in tracker.protocols:
            assert proto.transport.is_closing()
        for peer in peers:
            got = await peer.read_until_eof()
            if how == "close_clients":
                assert len(got) == BIG  # close() drains
            else:
                assert len(got) < BIG  # abort() drops
            peer.close()
        for proto in tracker.protocols:
            assert await proto.wait_lost() is None
        await asyncio.wait_for(waiter, 30)

    run(loop, main())


# --------------------------------------------------- connect_accepted_socket


def test_connect_accepted_socket(loop):
    async def main():
        lsock = listener()
        with lsock:
            client = socket.create_connection(lsock.getsockname(),
                                              timeout=10)
            conn, _ = lsock.accept()
        peer = RawPeer(loop, client)
        with peer:
            conn.setblocking(False)
            tr, proto = await loop.connect_accepted_socket(
                RecordingProtocol, conn)
            assert isinstance(tr, asyncio.Transport)
            assert proto.events == ["made"]
            assert tr.get_extra_info("peername") == client.getsockname()
            assert tr.get_extra_info("sockname") == client.getpeername()
            assert tr.get_extra_info("socket").fileno() == conn.fileno()
            peer.send(b"to server")
            await proto.wait_bytes(9)
            assert proto.data == b"to server"
            tr.write(b"to client")
            assert await peer.read_at_least(9) == b"to client"
            tr.close()
            assert await proto.wait_lost() is None
            assert await peer.read_until_eof() == b"to client"

    run(loop, main())


def test_connect_accepted_socket_requires_a_stream_socket(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            with pytest.raises(ValueError):
                await loop.connect_accepted_socket(RecordingProtocol, sock)

    run(loop, main())


# ------------------------------------------------------------------- unix


def test_unix_server_and_connection(loop, unix_path):
    async def main():
        tracker = Tracker(EchoProtocol)
        server = await loop.create_unix_server(tracker, unix_path)
        assert server.is_serving()
        (sock,) = server.sockets
        assert sock.family == socket.AF_UNIX
        assert sock.getsockname() == unix_path
        assert os.path.exists(unix_path)
        tr, proto = await loop.create_unix_connection(RecordingProtocol,
                                                      unix_path)
        tr.write(b"over unix")
        await proto.wait_bytes(9)
        assert proto.data == b"over unix"
        tr.close()
        assert await proto.wait_lost() is None
        server.close()
        await asyncio.wait_for(server.wait_closed(), 30)
        if sys.version_info >= (3, 13):
            # 3.13 removes the socket file when the server closes.
            assert not os.path.exists(unix_path)
        else:
            assert os.path.exists(unix_path)
        with pytest.raises(OSError):
            await loop.create_unix_connection(RecordingProtocol, unix_path)

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="cleanup_socket is new in 3.13")
def test_unix_server_cleanup_socket_false(loop, unix_path):
    async def main():
        server = await loop.create_unix_server(EchoProtocol, unix_path,
                                               cleanup_socket=False)
        server.close()
        await server.wait_closed()
        assert os.path.exists(unix_path)

    run(loop, main())


def test_unix_server_start_serving_false(loop, unix_path):
    async def main():
        server = await loop.create_unix_server(EchoProtocol, unix_path,
                                               start_serving=False)
        async with server:
            assert not server.is_serving()
            await server.start_serving()
            assert server.is_serving()
            reader, writer = await asyncio.open_unix_connection(unix_path)
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            writer.close()
            await writer.wait_closed()

    run(loop, main())


def test_unix_connection_to_missing_path(loop, unix_dir):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(
                RecordingProtocol, os.path.join(unix_dir, "missing"))

    run(loop, main())


# -------------------------------------------------------------- dual stack


def test_server_on_both_families_host_none(loop):
    """host=None binds every family getaddrinfo() offers (0.0.0.0 and ::);
    with port 0 each socket gets its own port.  Only loopback addresses are
    used to connect."""
    async def main():
        server = await loop.create_server(EchoProtocol, None, 0)
        async with server:
            families = sorted(s.family for s in server.sockets)
            assert families == sorted([socket.AF_INET, socket.AF_INET6])
            for sock in server.sockets:
                port = sock.getsockname()[1]
                assert port != 0
                if sock.family == socket.AF_INET6:
                    assert sock.getsockopt(socket.IPPROTO_IPV6,
                                           socket.IPV6_V6ONLY) == 1
                    addr = (LOCALHOST6, port)
                else:
                    addr = (LOCALHOST4, port)
                got = await echo_once(loop, addr, b"dual", sock.family)
                assert got == b"dual"

    run(loop, main())


def test_server_on_a_list_of_hosts(loop):
    async def main():
        server = await loop.create_server(EchoProtocol,
                                          [LOCALHOST4, LOCALHOST6], 0)
        async with server:
            assert len(server.sockets) == 2
            by_family = {s.family: s.getsockname() for s in server.sockets}
            assert by_family[socket.AF_INET][0] == LOCALHOST4
            assert by_family[socket.AF_INET6][0] == LOCALHOST6
            for family, addr in by_family.items():
                got = await echo_once(loop, addr[:2], b"x" * 1000, family)
                assert got == b"x" * 1000

    run(loop, main())


def test_ipv6_server(loop):
    async def main():
        tracker = Tracker()
        server = await loop.create_server(tracker, LOCALHOST6, 0)
        async with server:
            (sock,) = server.sockets
            assert sock.family == socket.AF_INET6
            addr = sock.getsockname()
            tr, proto = await loop.create_connection(
                RecordingProtocol, LOCALHOST6, addr[1])
            await tracker.wait_count(1)
            srv = tracker.protocols[0]
            assert srv.transport.get_extra_info("peername") == \
                tr.get_extra_info("sockname")
            tr.write(b"v6")
            await srv.wait_bytes(2)
            tr.close()
            await proto.wait_lost()
            await srv.wait_lost()

    run(loop, main())


# ------------------------------------------------ errors around accepting


def test_protocol_factory_closing_the_server_stops_accepting(loop,
                                                            exc_records):
    """A protocol factory that closes its server (and opens a listener that
    gets the closed fd's number, with a client waiting) ends the accept
    loop: the stdlib runs the factory later, in a Task, so its accept loop
    never touches the fd again.  The other listener keeps its client."""
    calls, box = [], {}

    class ClosesServer(asyncio.Protocol):
        def __init__(self):
            calls.append(1)
            server = box["server"]
            if server.is_serving():
                fd = server.sockets[0].fileno()
                server.close()
                other = listener()
                other.setblocking(False)
                box["other"] = other
                box["reused"] = other.fileno() == fd
                box["other client"] = socket.create_connection(
                    other.getsockname())

    async def main():
        server = box["server"] = await loop.create_server(
            ClosesServer, LOCALHOST4, 0, backlog=10)
        addr = server.sockets[0].getsockname()
        clients = [socket.create_connection(addr)]
        await Notifier().wait(lambda: "other" in box, poll=0.005,
                              what="the factory")
        await spin(loop, 5, 0.01)
        other = box["other"]
        try:
            assert calls == [1]
            conn, _ = other.accept()  # its client is still queued
            conn.close()
        finally:
            for sock in clients + [box["other client"], other]:
                sock.close()
        await server.wait_closed()
        return box["reused"]

    run(loop, main())
    # In debug mode both loops report the transport they could not attach
    # to the closed server (Server._attach asserts); nothing else.
    assert {ctx["message"] for ctx in exc_records.take()} <= {
        "Error on transport creation for incoming connection"}


def test_protocol_factory_error_does_not_stop_the_server(loop):
    """A protocol factory that raises: without debug mode nothing is
    reported; the connection goes away and the server keeps serving."""
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("factory")
        return EchoProtocol()

    async def main():
        server = await loop.create_server(factory, LOCALHOST4, 0)
        async with server:
            addr = server.sockets[0].getsockname()
            sock = socket.create_connection(addr, timeout=10)
            peer = RawPeer(loop, sock)
            with peer:
                peer.start_reading()

                def gone():
                    gc.collect()
                    return peer.eof

                await peer.wait(gone, poll=0.05, what="EOF")
                assert peer.data == b""
            assert await echo_once(loop, addr) == b"ping"
            assert len(calls) == 2

    loop.set_debug(False)  # (whatever PYTHONASYNCIODEBUG says)
    run(loop, main())


def test_protocol_factory_error_in_debug_mode(loop, exc_records):
    def factory():
        raise ZeroDivisionError("factory")

    async def main():
        server = await loop.create_server(factory, LOCALHOST4, 0)
        async with server:
            addr = server.sockets[0].getsockname()
            sock = socket.create_connection(addr, timeout=10)
            with sock:
                await Notifier().wait(lambda: exc_records.records,
                                      poll=0.005, what="exception handler")
        records = exc_records.take()
        assert len(records) == 1
        ctx = records[0]
        assert ctx["message"] == \
            "Error on transport creation for incoming connection"
        assert isinstance(ctx["exception"], ZeroDivisionError)
        assert "protocol" not in ctx

    loop.set_debug(True)
    run(loop, main())


def test_connection_made_error_goes_to_exception_handler(loop, exc_records):
    """connection_made() is called from a loop callback: an exception goes
    to the exception handler as from any callback; the connection stays."""
    class Failing(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("made")

    async def main():
        tracker = Tracker(Failing)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            addr = server.sockets[0].getsockname()
            sock = socket.create_connection(addr, timeout=10)
            with sock:
                await tracker.wait_count(1)
                await Notifier().wait(lambda: exc_records.records,
                                      poll=0.005, what="exception handler")
                records = exc_records.take()
                assert len(records) == 1
                assert records[0]["message"].startswith(
                    "Exception in callback")
                assert isinstance(records[0]["exception"],
                                  ZeroDivisionError)
                srv = tracker.protocols[0]
                sock.sendall(b"still read")
                await srv.wait_bytes(10)
                assert srv.data == b"still read"

    run(loop, main())
