"""Sockets whose class overrides socket.socket's I/O methods.

The standard library's transports, accept loop and sock_* operations call
the socket object's methods (recv, recv_into, send, sendto, recvfrom,
accept), so an instrumented or test socket sees every call.  A socket
subclass that only adds attributes must work as a plain socket."""

import asyncio
import socket

import pytest

from _net_support import (LOCALHOST4, listener, run, tcp_pair,
                          udp_pair)


class Tracked(socket.socket):
    """Records which I/O methods ran."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = set()

    def recv(self, *args):
        self.calls.add("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls.add("recv_into")
        return super().recv_into(*args)

    def send(self, *args):
        self.calls.add("send")
        return super().send(*args)

    def recvfrom(self, *args):
        self.calls.add("recvfrom")
        return super().recvfrom(*args)

    def sendto(self, *args):
        self.calls.add("sendto")
        return super().sendto(*args)

    def accept(self):
        self.calls.add("accept")
        return super().accept()


class Plain(socket.socket):
    """A subclass that overrides no method."""

    tag = "plain"


def adopt(cls, sock):
    """The same socket as a non-blocking `cls` instance (the original is
    detached)."""
    new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
    new.setblocking(False)
    return new


class Collect(asyncio.Protocol):
    def __init__(self, want):
        self.want = want
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.want and not self.done.done():
            self.done.set_result(bytes(self.data))


class CollectBuffered(asyncio.BufferedProtocol):
    def __init__(self, want):
        self.want = want
        self.buf = bytearray(64)
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        if len(self.data) >= self.want and not self.done.done():
            self.done.set_result(bytes(self.data))


async def echo_through(loop, cls, protocol_class):
    a, b = tcp_pair()
    sock = adopt(cls, a)
    try:
        transport, proto = await loop.create_connection(
            lambda: protocol_class(5), sock=sock)
        transport.write(b"hello")
        got = b""
        while len(got) < 5:
            got += await loop.sock_recv(b, 100)
        await loop.sock_sendall(b, b"world")
        received = await asyncio.wait_for(proto.done, 10)
        transport.close()
        return got, received, getattr(sock, "calls", None)
    finally:
        sock.close()
        b.close()


@pytest.mark.parametrize("protocol_class, reader", [
    (Collect, "recv"), (CollectBuffered, "recv_into")])
def test_stream_transport_uses_overridden_methods(loop, protocol_class,
                                                  reader):
    got, received, calls = run(loop, echo_through(loop, Tracked,
                                                  protocol_class))
    assert (got, received) == (b"hello", b"world")
    assert {reader, "send"} <= calls


def test_stream_transport_on_subclass_without_overrides(loop):
    got, received, _ = run(loop, echo_through(loop, Plain, Collect))
    assert (got, received) == (b"hello", b"world")


def test_datagram_transport_uses_overridden_methods(loop):
    async def main():
        a, b = udp_pair()
        sock = adopt(Tracked, a)
        try:
            got = loop.create_future()

            class Receive(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    got.done() or got.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(
                Receive, sock=sock)
            transport.sendto(b"ping", b.getsockname())
            assert (await loop.sock_recvfrom(b, 100))[0] == b"ping"
            await loop.sock_sendto(b, b"pong", sock.getsockname())
            data = await asyncio.wait_for(got, 10)
            transport.close()
            return data, sock.calls
        finally:
            sock.close()
            b.close()

    data, calls = run(loop, main())
    assert data == b"pong"
    assert {"sendto", "recvfrom"} <= calls


def test_server_accepts_through_overridden_accept(loop):
    async def main():
        lsock = adopt(Tracked, listener())
        server = await loop.create_server(lambda: Collect(3), sock=lsock)
        try:
            reader, writer = await asyncio.open_connection(
                LOCALHOST4, lsock.getsockname()[1])
            writer.write(b"abc")
            await writer.drain()
            for _ in range(1000):
                if "accept" in lsock.calls:
                    break
                await asyncio.sleep(0.001)
            writer.close()
            await writer.wait_closed()
            return lsock.calls
        finally:
            server.close()
            await server.wait_closed()

    assert "accept" in run(loop, main())


def test_sock_operations_use_overridden_methods(loop):
    async def main():
        a, b = tcp_pair()
        sock = adopt(Tracked, a)
        try:
            await loop.sock_sendall(sock, b"x" * 10)
            got = await loop.sock_recv(b, 100)
            b.send(b"yz")
            data = await loop.sock_recv(sock, 100)
            b.send(b"w")
            buf = bytearray(10)
            n = await loop.sock_recv_into(sock, buf)
            return got, data, bytes(buf[:n]), sock.calls
        finally:
            sock.close()
            b.close()

    got, data, into, calls = run(loop, main())
    assert (got, data, into) == (b"x" * 10, b"yz", b"w")
    assert {"send", "recv", "recv_into"} <= calls
