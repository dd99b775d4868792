"""contextvars and protocol callbacks.

The stdlib's transports get their callbacks run by Handles, each with a copy
of the context current when it was made: reading in a copy of the creator's
context (renewed by resume_reading()), writability in a copy of the context
that started waiting for it, connection_made and connection_lost in copies
of the context they were scheduled from.  A server's protocol factory runs
in a copy of create_server()'s caller's context, one per connection.
So a protocol sees the values its creator set, and what it sets stays in
its own copies."""

import asyncio
import contextvars
import socket

from _net_support import (LOCALHOST4, Notifier, listener, run, tcp_pair,
                          udp_pair)

cvar = contextvars.ContextVar("cvar", default="outer")


class Recorder:
    """Records cvar's value per callback; connection_made sets it."""

    def __init__(self):
        self.seen = {}
        self.lost = asyncio.get_running_loop().create_future()

    def note(self, name):
        self.seen.setdefault(name, []).append(cvar.get())

    def connection_made(self, transport):
        self.transport = transport
        self.note("connection_made")
        cvar.set("set in connection_made")

    def connection_lost(self, exc):
        self.note("connection_lost")
        self.lost.set_result(exc)


class Seen(Recorder, asyncio.Protocol):
    """A Recorder stream protocol; data_received and connection_lost set
    cvar too."""

    def data_received(self, data):
        self.note("data_received")
        cvar.set("set in data_received")

    def eof_received(self):
        self.note("eof_received")

    def pause_writing(self):
        self.note("pause_writing")

    def resume_writing(self):
        self.note("resume_writing")

    def connection_lost(self, exc):
        super().connection_lost(exc)
        cvar.set("set in connection_lost")


async def wait_for(what, cond):
    await Notifier().wait(cond, poll=0.002, what=what)


async def connect_seen(loop):
    """A Seen protocol on one end of a TCP pair, after connection_made;
    returns (transport, protocol, the other end)."""
    a, b = tcp_pair()
    tr, proto = await loop.create_connection(Seen, sock=a)
    await wait_for("connection_made", lambda: proto.seen)
    return tr, proto, b


def test_stream_callbacks_see_the_creators_context(loop):
    async def main():
        cvar.set("creator")
        tr, proto, b = await connect_seen(loop)
        with b:
            b.send(b"one")
            await wait_for("data", lambda: "data_received" in proto.seen)
            b.send(b"two")
            await wait_for("data", lambda: len(proto.seen["data_received"])
                           == 2)
            b.shutdown(socket.SHUT_WR)
            await wait_for("eof", lambda: "eof_received" in proto.seen)
            tr.close()
            await proto.lost
        # Nothing the protocol set leaks into its creator's context.
        assert cvar.get() == "creator"
        return proto.seen

    seen = run(loop, main())
    assert cvar.get() == "outer"
    assert seen["connection_made"] == ["creator"]
    # Reading has its own copy: connection_made's change is not in it, the
    # first data_received's is seen by the next one.
    assert seen["data_received"] == ["creator", "set in data_received"]
    assert seen["eof_received"] == ["set in data_received"]
    # eof_received() returned None: the reader closed the transport, so
    # connection_lost runs in a copy of the reading context.
    assert seen["connection_lost"] == ["set in data_received"]


def test_connection_lost_runs_in_a_copy_of_the_closers_context(loop):
    async def main():
        tr, proto, b = await connect_seen(loop)
        with b:

            async def closer():
                cvar.set("closer")
                tr.close()
                await proto.lost
                return cvar.get()

            after = await asyncio.create_task(closer())
            return proto.seen["connection_lost"], after

    lost, after = run(loop, main())
    assert lost == ["closer"]
    assert after == "closer"  # connection_lost's own set() stayed in it


def test_resume_reading_renews_the_reading_context(loop):
    async def main():
        cvar.set("creator")
        tr, proto, b = await connect_seen(loop)
        with b:
            tr.pause_reading()

            async def resumer():
                cvar.set("resumer")
                tr.resume_reading()

            await asyncio.create_task(resumer())
            b.send(b"x")
            await wait_for("data", lambda: "data_received" in proto.seen)
            tr.close()
            await proto.lost
            return proto.seen["data_received"]

    assert run(loop, main()) == ["resumer"]


def test_flow_control_callbacks_context(loop):
    """pause_writing() runs inside write(), in the writer's context;
    resume_writing() in a copy of the context that started the wait."""
    async def main():
        tr, proto, b = await connect_seen(loop)
        with b:
            tr.set_write_buffer_limits(high=1024, low=0)

            async def writer():
                cvar.set("writer")
                while not tr.get_write_buffer_size():
                    tr.write(b"q" * 65536)
                cvar.set("writer, later")

            await asyncio.create_task(writer())
            while tr.get_write_buffer_size():
                try:
                    b.recv(1 << 20)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await wait_for("resume", lambda: "resume_writing" in proto.seen)
            tr.abort()
            await proto.lost
            return proto.seen

    seen = run(loop, main())
    assert seen["pause_writing"] == ["writer"]
    assert seen["resume_writing"] == ["writer"]


def test_server_factory_context(loop):
    """The factory runs in a copy of create_server()'s caller's context,
    one copy per connection: what it sets is seen by that connection's
    callbacks only."""
    async def main():
        made = []

        def factory():
            made.append(cvar.get())
            cvar.set(f"connection {len(made)}")
            return Seen()

        cvar.set("server creator")
        lsock = listener()
        server = await loop.create_server(factory, sock=lsock)
        cvar.set("changed after create_server")
        clients = []
        try:
            for _ in range(2):
                r, w = await asyncio.open_connection(
                    LOCALHOST4, lsock.getsockname()[1])
                clients.append(w)
                await wait_for("accept", lambda: len(made) == len(clients))
        finally:
            for w in clients:
                w.close()
            server.close()
            await server.wait_closed()
        return made

    assert run(loop, main()) == ["server creator", "server creator"]


def test_server_connection_callbacks_context(loop):
    async def main():
        protos = []

        def factory():
            cvar.set(f"connection {len(protos) + 1}")
            protos.append(Seen())
            return protos[-1]

        cvar.set("server creator")
        lsock = listener()
        server = await loop.create_server(factory, sock=lsock)
        try:
            for _ in range(2):
                r, w = await asyncio.open_connection(
                    LOCALHOST4, lsock.getsockname()[1])
                w.write(b"hi")
                await wait_for("data", lambda: protos and "data_received"
                               in protos[-1].seen)
                w.close()
                await protos[-1].lost
        finally:
            server.close()
            await server.wait_closed()
        return [p.seen for p in protos]

    first, second = run(loop, main())
    for n, seen in ((1, first), (2, second)):
        assert seen["connection_made"] == [f"connection {n}"]
        assert seen["data_received"] == [f"connection {n}"]
        assert seen["connection_lost"] == ["set in data_received"]


def test_buffered_protocol_context(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.seen = []
            self.buf = bytearray(16)

        def get_buffer(self, sizehint):
            self.seen.append(("get_buffer", cvar.get()))
            cvar.set("set in get_buffer")
            return self.buf

        def buffer_updated(self, nbytes):
            self.seen.append(("buffer_updated", cvar.get()))

    async def main():
        cvar.set("creator")
        a, b = tcp_pair()
        with b:
            tr, proto = await loop.create_connection(Buffered, sock=a)
            b.send(b"x")
            await wait_for("data", lambda: len(proto.seen) == 2)
            tr.close()
            await asyncio.sleep(0)
        assert cvar.get() == "creator"
        return proto.seen

    assert run(loop, main()) == [("get_buffer", "creator"),
                                 ("buffer_updated", "set in get_buffer")]


def test_datagram_callbacks_context(loop):
    class Dgram(Recorder, asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            self.note("datagram_received")
            cvar.set("set in datagram_received")

    async def main():
        cvar.set("creator")
        a, b = udp_pair()
        with b:
            tr, proto = await loop.create_datagram_endpoint(Dgram, sock=a)
            for i in range(2):
                b.sendto(b"x", a.getsockname())
                await wait_for("datagram", lambda: len(
                    proto.seen.get("datagram_received", ())) == i + 1)
            tr.close()
            await proto.lost
        assert cvar.get() == "creator"
        return proto.seen

    seen = run(loop, main())
    assert seen == {
        "connection_made": ["creator"],
        "datagram_received": ["creator", "set in datagram_received"],
        "connection_lost": ["creator"],
    }
