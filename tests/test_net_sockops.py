"""loop.sock_* operations: results, waiting, cancellation, errors, and the
standard library's checks (transport-owned fds, blocking sockets in debug
mode, SSL sockets, closed loop)."""

import asyncio
import gc
import hashlib
import io
import os
import socket
import ssl
import time
import warnings

import pytest

from _net_support import (BIG, LOCALHOST4, RawPeer,
                          RecordingProtocol, connect_to_raw_peer,
                          fill_pattern, free_port, listener, run,
                          set_linger_reset, spin, tcp_pair, udp_pair,
                          unix_dir, unix_path)  # noqa: F401 (fixtures)


@pytest.fixture
def pair():
    a, b = tcp_pair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def udp():
    a, b = udp_pair()
    yield a, b
    a.close()
    b.close()


async def pending(task, iterations=5):
    """Let the loop run a little and check the task is still waiting."""
    await spin(asyncio.get_running_loop(), iterations, 0.005)
    assert not task.done(), task
    return task


async def cancelled(task):
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


# -------------------------------------------------------------- sock_recv


def test_sock_recv(loop, pair):
    a, b = pair

    async def main():
        b.send(b"ready")
        assert await loop.sock_recv(a, 100) == b"ready"
        # Waits for data.
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        b.send(b"later")
        assert await asyncio.wait_for(task, 30) == b"later"
        # At most n bytes.
        b.send(b"0123456789")
        assert await loop.sock_recv(a, 4) == b"0123"
        assert await loop.sock_recv(a, 100) == b"456789"
        # EOF
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        b.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(task, 30) == b""
        assert await loop.sock_recv(a, 100) == b""

    run(loop, main())


def test_sock_recv_peer_reset(loop, pair):
    a, b = pair

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        set_linger_reset(b)
        b.close()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 30)

    run(loop, main())


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_sock_recv_large_reads(loop, family):
    """Large receives in a row (aloop then reads a large queue straight
    into its bytes object) bring the stream in order, each at most n."""
    a, b = tcp_pair() if family == "tcp" else socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    data = fill_pattern(8 * 1024 * 1024 + 5, seed=13)

    async def main():
        sender = asyncio.ensure_future(loop.sock_sendall(b, data))
        await asyncio.sleep(0.05)  # let the receive queue fill
        sizes = [256 * 1024, 100_000, 65_536, 70_000, 10, 300_000]
        got = []
        received = 0
        while received < len(data):
            n = sizes[len(got) % len(sizes)]
            chunk = await asyncio.wait_for(loop.sock_recv(a, n), 30)
            assert 0 < len(chunk) <= n
            got.append(chunk)
            received += len(chunk)
        await asyncio.wait_for(sender, 30)
        assert received == len(data)
        assert hashlib.sha256(b"".join(got)).digest() == \
            hashlib.sha256(data).digest()

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["SOCK_DGRAM", "SOCK_SEQPACKET"])
def test_sock_recv_large_records(loop, kind):
    """On record sockets every sock_recv returns one record, truncated to
    n, also when several large records are queued (FIONREAD then counts
    more than one record, or only the first)."""
    a, b = socket.socketpair(socket.AF_UNIX, getattr(socket, kind))
    a.setblocking(False)
    b.setblocking(False)
    records = [bytes([i]) * size for i, size in
               enumerate([80_000, 70_000, 66_000, 100_000])]

    async def main():
        b.send(records[0])
        b.send(records[1])
        assert await loop.sock_recv(a, 256 * 1024) == records[0]
        b.send(records[2])
        assert await loop.sock_recv(a, 256 * 1024) == records[1]
        assert await loop.sock_recv(a, 256 * 1024) == records[2]
        b.send(records[3])
        b.send(b"end")
        assert await loop.sock_recv(a, 70_000) == records[3][:70_000]
        assert await loop.sock_recv(a, 256 * 1024) == b"end"

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


def test_sock_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        b.send(b"abc")
        assert await loop.sock_recv_into(a, buf) == 3
        assert buf == b"abc" + bytes(7)
        task = await pending(asyncio.ensure_future(
            loop.sock_recv_into(a, memoryview(buf)[5:])))
        b.send(b"0123456789")
        assert await asyncio.wait_for(task, 30) == 5
        assert buf == b"abc\0\x0001234"
        assert await loop.sock_recv_into(a, buf) == 5
        assert buf[:5] == b"56789"
        b.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv_into(a, buf) == 0

    run(loop, main())


def test_sock_recvfrom(loop, udp):
    a, b = udp

    async def main():
        a.sendto(b"dgram", b.getsockname())
        data, addr = await loop.sock_recvfrom(b, 100)
        assert (data, addr) == (b"dgram", a.getsockname())
        task = await pending(asyncio.ensure_future(loop.sock_recvfrom(b,
                                                                      100)))
        a.sendto(b"later", b.getsockname())
        assert await asyncio.wait_for(task, 30) == (b"later",
                                                    a.getsockname())
        # A datagram longer than bufsize is truncated.
        a.sendto(b"0123456789", b.getsockname())
        assert await loop.sock_recvfrom(b, 4) == (b"0123", a.getsockname())
        # An empty datagram.
        a.sendto(b"", b.getsockname())
        assert await loop.sock_recvfrom(b, 100) == (b"", a.getsockname())

    run(loop, main())


def test_sock_recvfrom_ipv6(loop):
    a, b = udp_pair(socket.AF_INET6)

    async def main():
        with a, b:
            task = await pending(asyncio.ensure_future(
                loop.sock_recvfrom(b, 100)))
            a.sendto(b"v6", b.getsockname())
            data, addr = await asyncio.wait_for(task, 30)
            assert data == b"v6"
            assert addr[:2] == a.getsockname()[:2]

    run(loop, main())


def test_sock_recvfrom_into(loop, udp):
    a, b = udp

    async def main():
        buf = bytearray(8)
        a.sendto(b"abc", b.getsockname())
        assert await loop.sock_recvfrom_into(b, buf) == (3, a.getsockname())
        assert buf[:3] == b"abc"
        # nbytes=0 means len(buf); longer datagrams are truncated.
        task = await pending(asyncio.ensure_future(
            loop.sock_recvfrom_into(b, buf)))
        a.sendto(b"0123456789", b.getsockname())
        assert await asyncio.wait_for(task, 30) == (8, a.getsockname())
        assert buf == b"01234567"
        a.sendto(b"xyz", b.getsockname())
        assert await loop.sock_recvfrom_into(b, buf, 2) == (
            2, a.getsockname())
        assert buf == b"xy234567"

    run(loop, main())


# ------------------------------------------------------------ sock_sendall


def test_sock_sendall_small(loop, pair):
    a, b = pair

    async def main():
        assert await loop.sock_sendall(a, b"bytes") is None
        assert await loop.sock_sendall(a, bytearray(b"array")) is None
        assert await loop.sock_sendall(a, memoryview(b"__view__")[2:6]) \
            is None
        assert await loop.sock_sendall(a, b"") is None
        peer = RawPeer(loop, b)
        assert await peer.read_at_least(14) == b"bytesarrayview"

    run(loop, main())


def test_sock_sendall_large(loop, pair):
    """A sendall much larger than the kernel buffers waits (EAGAIN) until
    the peer reads, and sends everything in order."""
    a, b = pair
    data = fill_pattern(BIG, seed=11)

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_sendall(a,
                                                                     data)))
        peer = RawPeer(loop, b)
        peer.start_reading()
        assert await asyncio.wait_for(task, 30) is None
        got = await peer.read_at_least(len(data))
        assert len(got) == len(data)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        peer.stop_reading()

    run(loop, main())


def test_sock_sendall_peer_reset(loop, pair):
    a, b = pair

    async def main():
        task = await pending(asyncio.ensure_future(
            loop.sock_sendall(a, b"\0" * BIG)))
        set_linger_reset(b)
        b.close()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 30)

    run(loop, main())


# ------------------------------------------------------------- sock_sendto


def test_sock_sendto(loop, udp):
    a, b = udp
    b.settimeout(10)

    async def main():
        assert await loop.sock_sendto(a, b"hello", b.getsockname()) == 5
        assert b.recvfrom(100) == (b"hello", a.getsockname())
        assert await loop.sock_sendto(a, bytearray(b"x" * 1000),
                                      b.getsockname()) == 1000
        assert b.recvfrom(2000) == (b"x" * 1000, a.getsockname())
        assert await loop.sock_sendto(a, b"", b.getsockname()) == 0
        assert b.recvfrom(100) == (b"", a.getsockname())

    run(loop, main())


# ------------------------------------------------------------ sock_connect


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_sock_connect(loop, family):
    async def main():
        lsock = listener(family)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        with lsock, sock:
            addr = lsock.getsockname()
            assert await loop.sock_connect(sock, addr[:2]) is None
            assert sock.getpeername()[:2] == addr[:2]
            lsock.settimeout(10)
            conn, peer_addr = lsock.accept()
            with conn:
                assert peer_addr[:2] == sock.getsockname()[:2]
                await loop.sock_sendall(sock, b"connected")
                conn.settimeout(10)
                assert conn.recv(100) == b"connected"

    run(loop, main())


def test_sock_connect_unix(loop, unix_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        with lsock, sock:
            lsock.bind(unix_path)
            lsock.listen(5)
            assert await loop.sock_connect(sock, unix_path) is None
            assert sock.getpeername() == unix_path

    run(loop, main())


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_sock_connect_refused(loop, family):
    async def main():
        closed = free_port(family)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        with closed, sock:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(sock, closed.getsockname()[:2])

    run(loop, main())


def test_sock_connect_unix_errors(loop, unix_dir):
    async def main():
        missing = os.path.join(unix_dir, "missing")
        bound = os.path.join(unix_dir, "bound")
        not_listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        not_listening.bind(bound)
        with not_listening:
            for path, exc in [(missing, FileNotFoundError),
                              (bound, ConnectionRefusedError)]:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                with sock:
                    with pytest.raises(exc):
                        await loop.sock_connect(sock, path)

    run(loop, main())


# ------------------------------------------------------------- sock_accept


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_sock_accept(loop, family):
    async def main():
        lsock = listener(family)
        lsock.setblocking(False)
        with lsock:
            addr = lsock.getsockname()[:2]
            # A connection already waiting.
            c1 = socket.create_connection(addr, timeout=10)
            conn, peer = await loop.sock_accept(lsock)
            with c1, conn:
                assert conn.gettimeout() == 0  # non-blocking
                assert conn.family == family
                assert peer[:2] == c1.getsockname()[:2]
                assert conn.getpeername()[:2] == c1.getsockname()[:2]
            # Waiting for a connection.
            task = await pending(asyncio.ensure_future(
                loop.sock_accept(lsock)))
            c2 = socket.create_connection(addr, timeout=10)
            conn, peer = await asyncio.wait_for(task, 30)
            with c2, conn:
                assert conn.gettimeout() == 0
                assert peer[:2] == c2.getsockname()[:2]
                c2.sendall(b"through")
                assert await loop.sock_recv(conn, 100) == b"through"

    run(loop, main())


def test_sock_accept_unix(loop, unix_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(unix_path)
        lsock.listen(5)
        lsock.setblocking(False)
        with lsock:
            task = await pending(asyncio.ensure_future(
                loop.sock_accept(lsock)))
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(unix_path)
            conn, peer = await asyncio.wait_for(task, 30)
            with client, conn:
                assert peer == ""
                assert conn.gettimeout() == 0
                assert conn.getsockname() == unix_path

    run(loop, main())


# ----------------------------------------------------------- sock_sendfile


@pytest.fixture
def data_file(tmp_path):
    content = fill_pattern(3 * 1024 * 1024 + 17, seed=12)
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    return path, content


def test_sock_sendfile(loop, pair, data_file):
    a, b = pair
    path, content = data_file

    async def main():
        peer = RawPeer(loop, b)
        peer.start_reading()
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f)
            assert sent == len(content)
            assert f.tell() == len(content)
            got = await peer.read_at_least(len(content))
            assert got == content
            # offset and count; the file position ends after what was sent.
            sent = await loop.sock_sendfile(a, f, 1000, 50_000)
            assert sent == 50_000
            assert f.tell() == 51_000
            got = await peer.read_at_least(len(content) + 50_000)
            assert got[len(content):] == content[1000:51_000]
            # At the end of the file: nothing to send.
            sent = await loop.sock_sendfile(a, f, len(content))
            assert sent == 0
        peer.stop_reading()

    run(loop, main())


def test_sock_sendfile_empty_file(loop, pair, tmp_path):
    a, b = pair
    path = tmp_path / "empty"
    path.write_bytes(b"")

    async def main():
        with open(path, "rb") as f:
            assert await loop.sock_sendfile(a, f) == 0

    run(loop, main())


def test_sock_sendfile_fallback(loop, pair):
    """A file object without a file descriptor: the fallback (read and
    sock_sendall) is used, unless fallback=False."""
    a, b = pair
    content = fill_pattern(300_000, seed=13)

    async def main():
        peer = RawPeer(loop, b)
        peer.start_reading()
        f = io.BytesIO(content)
        assert await loop.sock_sendfile(a, f) == len(content)
        assert f.tell() == len(content)
        assert await peer.read_at_least(len(content)) == content
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, io.BytesIO(b"x"), fallback=False)
        peer.stop_reading()

    run(loop, main())


def test_sock_sendfile_argument_errors(loop, pair, udp, data_file):
    a, b = pair
    path, content = data_file

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await loop.sock_sendfile(udp[0], f)
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, f, -1)
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, f, 0, 0)
            with pytest.raises(TypeError):
                await loop.sock_sendfile(a, f, 0, "1")
        with open(path, "r", encoding="latin-1") as f:
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, f)

    run(loop, main())


# ------------------------------------------------------------ cancellation


def test_cancel_sock_recv_loses_no_data(loop, pair):
    a, b = pair

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        await cancelled(task)
        # Cancelling unregisters the reader.
        assert loop.remove_reader(a.fileno()) is False
        b.send(b"after")
        assert await loop.sock_recv(a, 100) == b"after"

    run(loop, main())


def test_cancel_sock_recv_when_data_is_ready(loop, pair):
    """Data arrives, then the operation is cancelled before the loop runs
    again: the data stays for the next sock_recv()."""
    a, b = pair

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        b.send(b"racy")
        await cancelled(task)
        assert await loop.sock_recv(a, 100) == b"racy"

    run(loop, main())


def test_cancel_sock_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        task = await pending(asyncio.ensure_future(
            loop.sock_recv_into(a, buf)))
        b.send(b"racy")
        await cancelled(task)
        assert buf == bytes(10)  # untouched
        assert await loop.sock_recv_into(a, buf) == 4
        assert buf[:4] == b"racy"

    run(loop, main())


def test_cancel_sock_recvfrom(loop, udp):
    a, b = udp

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_recvfrom(b,
                                                                      100)))
        await cancelled(task)
        assert loop.remove_reader(b.fileno()) is False
        task = await pending(asyncio.ensure_future(loop.sock_recvfrom(b,
                                                                      100)))
        a.sendto(b"one", b.getsockname())
        a.sendto(b"two", b.getsockname())
        await cancelled(task)
        assert await loop.sock_recvfrom(b, 100) == (b"one", a.getsockname())
        assert await loop.sock_recvfrom(b, 100) == (b"two", a.getsockname())

    run(loop, main())


def test_cancel_sock_recvfrom_into(loop, udp):
    a, b = udp

    async def main():
        buf = bytearray(10)
        task = await pending(asyncio.ensure_future(
            loop.sock_recvfrom_into(b, buf)))
        a.sendto(b"racy", b.getsockname())
        await cancelled(task)
        assert buf == bytes(10)
        assert await loop.sock_recvfrom_into(b, buf) == (4, a.getsockname())

    run(loop, main())


def test_cancel_sock_accept(loop):
    async def main():
        lsock = listener()
        lsock.setblocking(False)
        with lsock:
            addr = lsock.getsockname()
            task = await pending(asyncio.ensure_future(
                loop.sock_accept(lsock)))
            await cancelled(task)
            assert loop.remove_reader(lsock.fileno()) is False
            # A connection arriving now is accepted by the next call ...
            c1 = socket.create_connection(addr, timeout=10)
            conn, peer = await loop.sock_accept(lsock)
            with c1, conn:
                assert peer == c1.getsockname()
            # ... also when it arrives just before the cancellation.
            task = await pending(asyncio.ensure_future(
                loop.sock_accept(lsock)))
            c2 = socket.create_connection(addr, timeout=10)
            await cancelled(task)
            conn, peer = await loop.sock_accept(lsock)
            with c2, conn:
                assert peer == c2.getsockname()

    run(loop, main())


def test_cancel_sock_sendall(loop, pair):
    """Cancelling a pending sock_sendall(): what was sent is a prefix of the
    data; the socket is usable afterwards."""
    a, b = pair
    data = fill_pattern(BIG, seed=14)

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_sendall(a,
                                                                     data)))
        await cancelled(task)
        assert loop.remove_writer(a.fileno()) is False
        peer = RawPeer(loop, b)
        peer.start_reading()
        await loop.sock_sendall(a, b"tail")
        a.shutdown(socket.SHUT_WR)
        got = await peer.read_until_eof()
        assert got.endswith(b"tail")
        prefix = got[:-4]
        assert 0 < len(prefix) < len(data)
        assert prefix == data[:len(prefix)]

    run(loop, main())


def test_cancel_sock_connect(loop):
    """A connect that cannot complete (the listener's accept queue is full,
    so the SYN is dropped) is cancelled; the writer is unregistered."""
    async def main():
        lsock = socket.socket()
        lsock.bind((LOCALHOST4, 0))
        lsock.listen(0)  # Linux queues one connection
        addr = lsock.getsockname()
        filler = socket.create_connection(addr, timeout=10)
        sock = socket.socket()
        sock.setblocking(False)
        with lsock, filler, sock:
            task = await pending(asyncio.ensure_future(
                loop.sock_connect(sock, addr)), 10)
            await cancelled(task)
            assert loop.remove_writer(sock.fileno()) is False

    run(loop, main())


def test_cancel_sock_sendfile(loop, pair, tmp_path):
    a, b = pair
    content = fill_pattern(BIG, seed=15)
    path = tmp_path / "big.bin"
    path.write_bytes(content)

    async def main():
        with open(path, "rb") as f:
            task = await pending(asyncio.ensure_future(
                loop.sock_sendfile(a, f)))
            await cancelled(task)
            assert loop.remove_writer(a.fileno()) is False
        peer = RawPeer(loop, b)
        peer.start_reading()
        await loop.sock_sendall(a, b"tail")
        a.shutdown(socket.SHUT_WR)
        got = await peer.read_until_eof()
        assert got.endswith(b"tail")
        prefix = got[:-4]
        assert 0 < len(prefix) < len(content)
        assert prefix == content[:len(prefix)]

    run(loop, main())


# ------------------------------------------------ concurrency on a socket


def test_concurrent_recv_and_sendall(loop, pair):
    """A reader and a writer on the same socket at the same time."""
    a, b = pair
    data = fill_pattern(BIG, seed=16)

    async def main():
        recv = asyncio.ensure_future(loop.sock_recv(a, 100))
        send = asyncio.ensure_future(loop.sock_sendall(a, data))
        await pending(recv)
        await pending(send)
        b.send(b"ping")
        assert await asyncio.wait_for(recv, 30) == b"ping"
        assert not send.done()
        peer = RawPeer(loop, b)
        peer.start_reading()
        assert await asyncio.wait_for(send, 30) is None
        got = await peer.read_at_least(len(data))
        assert got == data
        peer.stop_reading()

    run(loop, main())


def test_concurrent_sock_recv_last_one_wins(loop, pair):
    """Two sock_recv() at once on one socket: as in the standard library,
    the later call takes over the fd's reader; the earlier one waits until
    it is cancelled (it never gets data), and nothing is lost."""
    a, b = pair

    async def main():
        first = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        second = await pending(asyncio.ensure_future(loop.sock_recv(a,
                                                                    100)))
        b.send(b"data")
        assert await asyncio.wait_for(second, 30) == b"data"
        await pending(first)
        b.send(b"more")
        await spin(loop, 5, 0.005)
        assert not first.done()
        await cancelled(first)
        assert await loop.sock_recv(a, 100) == b"more"

    run(loop, main())


def test_many_sockets_at_once(loop):
    """Operations on many sockets at the same time complete independently."""
    async def main():
        pairs = [tcp_pair() for _ in range(50)]
        try:
            tasks = [asyncio.ensure_future(loop.sock_recv(a, 100))
                     for a, _ in pairs]
            await spin(loop, 3)
            for i, (_, b) in enumerate(reversed(pairs)):
                b.send(b"%d" % (len(pairs) - 1 - i))
            results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert results == [b"%d" % i for i in range(len(pairs))]
        finally:
            for a, b in pairs:
                a.close()
                b.close()

    run(loop, main())


# ------------------------------------- the registration an operation leaves
# aloop keeps a finished operation's fd in epoll, disarmed (EPOLLONESHOT),
# so the next wait is one epoll_ctl.  Whatever happens to the fd in between
# must behave as after the stdlib's remove_reader().


async def received_after_waiting(loop, sock, peer, data):
    """sock_recv() on `sock` waits (nothing is queued), then gets `data`."""
    task = await pending(asyncio.ensure_future(loop.sock_recv(sock, 100)))
    peer.send(data)
    assert await asyncio.wait_for(task, 30) == data


def test_sock_recv_on_a_reused_fd_number(loop):
    """An fd number closed after a wait and reused by a new socket gets its
    own registration, also while the old socket's file stays open through
    a dup(); data for the old file wakes nothing."""
    async def main():
        a, b = tcp_pair()
        await received_after_waiting(loop, a, b, b"first")
        number = a.fileno()
        old = a.dup()
        a.close()
        new = socket.socket()  # POSIX: the lowest free number
        socks = [old, b, new]
        try:
            assert new.fileno() == number
            with listener() as lsock:
                new.connect(lsock.getsockname())
                lsock.settimeout(30)
                other, _ = lsock.accept()
            socks.append(other)
            new.setblocking(False)
            other.setblocking(False)
            b.send(b"to the old file")
            await received_after_waiting(loop, new, other, b"second")
            assert old.recv(100) == b"to the old file"
        finally:
            for s in socks:
                s.close()

    run(loop, main())


def test_closed_fd_with_data_does_not_wake_the_loop(loop):
    """Data for a socket that waited, was dup()ed and closed, keeps no
    registration busy: the loop sleeps instead of spinning."""
    async def main():
        a, b = tcp_pair()
        await received_after_waiting(loop, a, b, b"x")
        old = a.dup()
        a.close()
        try:
            b.send(b"unread")
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.sleep(0.3)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            assert cpu < wall / 2, (cpu, wall)
        finally:
            old.close()
            b.close()

    run(loop, main())


def test_transport_and_add_reader_after_sock_recv_waited(loop):
    """A socket whose sock_recv() waited can then be read with add_reader()
    and be handed to a transport."""
    async def main():
        a, b = tcp_pair()
        try:
            await received_after_waiting(loop, a, b, b"op")
            got = loop.create_future()
            loop.add_reader(a, lambda: got.set_result(a.recv(100)))
            b.send(b"reader")
            assert await asyncio.wait_for(got, 30) == b"reader"
            assert loop.remove_reader(a)
            await received_after_waiting(loop, a, b, b"op again")
            tr, proto = await loop.connect_accepted_socket(
                RecordingProtocol, a)
            b.send(b"transport")
            await proto.wait_bytes(len(b"transport"))
            assert bytes(proto.data) == b"transport"
            tr.close()
        finally:
            a.close()
            b.close()

    run(loop, main())


def test_sock_recv_waits_again_after_a_spurious_wakeup(loop, pair):
    """The fd became readable, but a callback that ran first took the data:
    the operation goes on waiting and gets the next data."""
    a, b = pair

    async def main():
        task = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        stolen = []
        b.send(b"taken")
        # Queued before the poll that reports the data: runs before the
        # operation's retry.
        loop.call_soon(lambda: stolen.append(a.recv(100)))
        await spin(loop, 5)
        assert stolen == [b"taken"]
        assert not task.done()
        b.send(b"kept")
        assert await asyncio.wait_for(task, 30) == b"kept"

    run(loop, main())


def test_sock_recv_after_a_cancelled_one(loop, pair):
    a, b = pair

    async def main():
        await received_after_waiting(loop, a, b, b"one")
        await cancelled(await pending(
            asyncio.ensure_future(loop.sock_recv(a, 100))))
        await received_after_waiting(loop, a, b, b"two")

    run(loop, main())


def test_sock_recv_on_a_reused_fd_number_after_closed_waits(loop):
    """A socket with a sock_recv and a sock_sendall waiting is closed, then
    both are cancelled (the stdlib reports the EBADF of removing the first
    while the second is registered).  A new socket on the same fd number
    gets its own registration: its sock_recv receives."""
    # Keeps the stdlib's EBADF report out of the log; it is not the subject.
    loop.set_exception_handler(lambda loop, context: None)

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        number = a.fileno()
        recv = await pending(asyncio.ensure_future(loop.sock_recv(a, 100)))
        send = await pending(
            asyncio.ensure_future(loop.sock_sendall(a, b"x" * BIG)))
        a.close()
        for task in (recv, send):
            await cancelled(task)
        c, d = socket.socketpair()
        socks = [b, c, d]
        try:
            assert c.fileno() == number
            c.setblocking(False)
            await received_after_waiting(loop, c, d, b"hello")
        finally:
            for sock in socks:
                sock.close()

    run(loop, main())


# ------------------------------------------------------ refused operations


def test_fd_used_by_transport_is_refused(loop):
    async def main():
        tr, proto, peer = await connect_to_raw_peer(loop, RecordingProtocol)
        with peer:
            fd = tr.get_extra_info("socket").fileno()
            sock = socket.socket(fileno=fd)  # same fd: detached below
            try:
                sock.setblocking(False)  # (it is; tell the socket object)
                ops = [
                    lambda: loop.sock_recv(sock, 100),
                    lambda: loop.sock_recv_into(sock, bytearray(10)),
                    lambda: loop.sock_recvfrom(sock, 100),
                    lambda: loop.sock_recvfrom_into(sock, bytearray(10)),
                    lambda: loop.sock_sendall(sock, b"\0" * BIG),
                ]
                for op in ops:
                    with pytest.raises(RuntimeError,
                                       match="is used by transport"):
                        await op()
            finally:
                sock.detach()
            # The transport was not disturbed (apart from what sendall
            # managed to send before it was refused).
            assert not tr.is_closing()
            peer.send(b"still mine")
            await proto.wait_bytes(10)
            assert proto.data == b"still mine"
            tr.close()
            await proto.wait_lost()

    run(loop, main())


def test_blocking_socket_refused_in_debug_mode(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")

    async def main():
        tcp = socket.socket()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lsock = listener()
        with tcp, udp, lsock, open(path, "rb") as f:
            assert tcp.gettimeout() is None
            lsock.setblocking(True)
            addr = lsock.getsockname()
            ops = [
                lambda: loop.sock_recv(tcp, 1),
                lambda: loop.sock_recv_into(tcp, bytearray(1)),
                lambda: loop.sock_recvfrom(udp, 1),
                lambda: loop.sock_recvfrom_into(udp, bytearray(1)),
                lambda: loop.sock_sendall(tcp, b"x"),
                lambda: loop.sock_sendto(udp, b"x", addr),
                lambda: loop.sock_connect(tcp, addr),
                lambda: loop.sock_accept(lsock),
                lambda: loop.sock_sendfile(tcp, f),
            ]
            for op in ops:
                with pytest.raises(ValueError,
                                   match="the socket must be non-blocking"):
                    await op()
            # A socket with a timeout is not non-blocking either.
            tcp.settimeout(1.0)
            with pytest.raises(ValueError, match="non-blocking"):
                await loop.sock_recv(tcp, 1)

    loop.set_debug(True)
    run(loop, main())


def test_ssl_socket_refused(loop):
    async def main():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        raw = socket.socket()
        raw.setblocking(False)
        sock = ctx.wrap_socket(raw, server_hostname="localhost",
                               do_handshake_on_connect=False)
        with sock:
            ops = [
                lambda: loop.sock_recv(sock, 1),
                lambda: loop.sock_recv_into(sock, bytearray(1)),
                lambda: loop.sock_recvfrom(sock, 1),
                lambda: loop.sock_recvfrom_into(sock, bytearray(1)),
                lambda: loop.sock_sendall(sock, b"x"),
                lambda: loop.sock_sendto(sock, b"x", (LOCALHOST4, 9)),
                lambda: loop.sock_connect(sock, (LOCALHOST4, 9)),
                lambda: loop.sock_accept(sock),
            ]
            for op in ops:
                with pytest.raises(TypeError, match="SSLSocket"):
                    await op()

    run(loop, main())


def _start(make):
    """Create the operation and run it up to its first suspension (without
    running the loop); return what it yields."""
    awaitable = make()
    return awaitable.__await__().send(None)


def test_operations_on_a_closed_loop(loop, pair, udp):
    a, b = pair
    lsock = listener()
    lsock.setblocking(False)
    ops = [
        lambda: loop.sock_recv(a, 1),
        lambda: loop.sock_recv_into(a, bytearray(1)),
        lambda: loop.sock_recvfrom(udp[0], 1),
        lambda: loop.sock_recvfrom_into(udp[0], bytearray(1)),
        lambda: loop.sock_accept(lsock),
    ]
    loop.close()
    with lsock:
        for op in ops:
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                _start(op)


# --------------------------------------------- arguments, as Python binds them


class Index:
    """An integer-like object: socket methods take it through __index__."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def test_sock_methods_take_keyword_arguments(loop, pair, udp):
    """The stdlib's sock_* are plain methods: their parameters can be
    passed by name."""
    a, b = pair
    u1, u2 = udp

    async def main():
        b.send(b"abcdef")
        assert await loop.sock_recv(sock=a, n=2) == b"ab"
        buf = bytearray(2)
        assert await loop.sock_recv_into(a, buf=buf) == 2 and buf == b"cd"
        await loop.sock_sendall(b, data=b"ok")
        assert await loop.sock_recv(a, 10) == b"efok"
        await loop.sock_sendto(u1, data=b"dg", address=u2.getsockname())
        data, _ = await loop.sock_recvfrom(u2, bufsize=10)
        assert data == b"dg"
        u1.sendto(b"dgram", u2.getsockname())
        buf = bytearray(10)
        n, _ = await loop.sock_recvfrom_into(u2, buf, nbytes=3)
        assert n == 3 and buf[:3] == b"dgr"
        with listener() as lsock:
            lsock.setblocking(False)
            client = socket.socket()
            client.setblocking(False)
            with client:
                await loop.sock_connect(client, address=lsock.getsockname())
                conn, _ = await loop.sock_accept(sock=lsock)
                conn.close()
        with pytest.raises(TypeError, match="unexpected keyword"):
            loop.sock_recv(a, size=1)
        with pytest.raises(TypeError, match="multiple values"):
            loop.sock_recv(a, 1, n=1)
        with pytest.raises(TypeError, match="missing 1 required"):
            loop.sock_recv(a)

    run(loop, main())


def test_sock_recv_size_is_converted_as_the_socket_does(loop, pair):
    """n goes to sock.recv(): an __index__ object works, a float raises the
    socket's TypeError when awaited, not when called."""
    a, b = pair

    async def main():
        b.send(b"abcdef")
        assert await loop.sock_recv(a, Index(3)) == b"abc"
        op = loop.sock_recv(a, 1.5)
        with pytest.raises(TypeError, match="cannot be interpreted"):
            await op
        assert await loop.sock_recv(a, 10) == b"def"

    run(loop, main())


@pytest.mark.parametrize("buf", [b"read-only", memoryview(b"ro"), "text"],
                         ids=["bytes", "read-only memoryview", "str"])
def test_sock_recv_into_a_buffer_it_cannot_write_raises_type_error(loop, pair,
                                                                   buf):
    a, b = pair

    async def main():
        b.send(b"x")
        with pytest.raises(TypeError, match="read-write bytes-like object"):
            await loop.sock_recv_into(a, buf)
        assert await loop.sock_recv(a, 10) == b"x"

    run(loop, main())


def test_sock_recvfrom_into_takes_len_of_buf_when_awaited(loop, udp):
    """nbytes=0 means len(buf), computed when the operation runs: a buffer
    without a len() fails on await, as in the stdlib's coroutine."""
    u1, u2 = udp

    async def main():
        op = loop.sock_recvfrom_into(u2, None)
        with pytest.raises(TypeError):
            await op
        u1.sendto(b"abc", u2.getsockname())
        buf = bytearray(2)
        n, _ = await loop.sock_recvfrom_into(u2, buf)
        assert n == 2 and buf == b"ab"

    run(loop, main())


def test_sock_sendall_of_empty_data_still_sends(loop):
    """The stdlib's sock_sendall calls sock.send(data) once even for b"":
    an unconnected socket reports its error."""
    async def main():
        with socket.socket() as sock:
            sock.setblocking(False)
            with pytest.raises(OSError):
                await loop.sock_sendall(sock, b"")

    run(loop, main())


def test_unawaited_sock_operation_warns_it_was_never_awaited(loop, pair):
    a, _ = pair
    with pytest.warns(RuntimeWarning,
                      match="coroutine 'BaseSelectorEventLoop.sock_recv' "
                            "was never awaited"):
        op = loop.sock_recv(a, 10)
        del op
        gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op = loop.sock_recv(a, 10)
        op.close()  # closed: no warning, as for a coroutine
        del op
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
