"""add_reader / add_writer / remove_reader / remove_writer."""

import errno
import os
import socket

import pytest

from _aloop_support import run, run_once


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    fds = [r, w]
    yield r, w
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class FileLike:
    """An object that is not a socket or int but has fileno()."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def wait_for_calls(loop, calls, n=1, timeout=10):
    """Run the loop until `calls` has n entries (bounded)."""
    deadline = loop.time() + timeout
    while len(calls) < n and loop.time() < deadline:
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
    assert len(calls) >= n, calls


def assert_reader_called(loop, sock, peer):
    """A reader on `sock` is called once `peer` sends, and then removed."""
    calls = []
    loop.add_reader(sock, calls.append, "r")
    peer.send(b"x")
    wait_for_calls(loop, calls)
    assert loop.remove_reader(sock) is True


# ------------------------------------------------------------ return values


def test_add_reader_returns_none(loop, pipe):
    r, w = pipe
    assert loop.add_reader(r, lambda: None) is None
    assert loop.add_writer(w, lambda: None) is None
    assert loop.remove_reader(r) is True
    assert loop.remove_writer(w) is True


def test_remove_returns_false_when_not_registered(loop, pipe):
    r, w = pipe
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is False
    loop.add_reader(r, lambda: None)
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(r) is False
    # A reader does not make remove_writer succeed, and vice versa.
    loop.add_reader(r, lambda: None)
    assert loop.remove_writer(r) is False
    assert loop.remove_reader(r) is True


def test_remove_unknown_fd_numbers(loop):
    assert loop.remove_reader(12345) is False
    assert loop.remove_writer(12345) is False
    assert loop.remove_reader(0) is False


# ------------------------------------------------------------ readiness


def test_reader_called_with_args(loop, pipe):
    r, w = pipe
    calls = []

    def on_read(*args):
        calls.append(args)
        os.read(r, 100)

    loop.add_reader(r, on_read, 1, "two")
    os.write(w, b"data")
    wait_for_calls(loop, calls)
    assert calls[0] == (1, "two")
    loop.remove_reader(r)


def test_reader_called_while_readable(loop, sockpair):
    # Level-triggered: the reader is called again while data remains.
    a, b = sockpair
    calls = []

    def on_read():
        calls.append(a.recv(1))

    loop.add_reader(a, on_read)
    b.send(b"abc")
    wait_for_calls(loop, calls, 3)
    loop.remove_reader(a)
    assert b"".join(calls[:3]) == b"abc"


def test_reader_not_called_when_no_data(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, "read")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == []
    loop.remove_reader(a)


def test_writer_called(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_write():
        calls.append("w")
        loop.remove_writer(a)

    loop.add_writer(a, on_write)
    wait_for_calls(loop, calls)
    assert calls == ["w"]


def test_writer_with_args(loop, pipe):
    r, w = pipe
    calls = []

    def on_write(*args):
        calls.append(args)
        loop.remove_writer(w)

    loop.add_writer(w, on_write, "x", 2)
    wait_for_calls(loop, calls)
    assert calls == [("x", 2)]


def test_removed_reader_not_called(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, "read")
    assert loop.remove_reader(a) is True
    b.send(b"x")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == []


def test_reader_removed_by_earlier_callback_same_iteration(loop, sockpair):
    # `remover` is queued before the iteration; the poll of that iteration
    # queues the reader's call after it.  Removing the reader cancels that
    # queued call: it does not run.
    a, b = sockpair
    calls = []

    def remover():
        calls.append("remover")
        assert loop.remove_reader(a) is True

    b.send(b"x")
    loop.add_reader(a, calls.append, "read")
    loop.call_soon(remover)
    run_once(loop)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["remover"]


def test_writer_removed_by_earlier_callback_same_iteration(loop, sockpair):
    a, b = sockpair
    calls = []

    def remover():
        calls.append("remover")
        assert loop.remove_writer(a) is True

    loop.add_writer(a, calls.append, "write")
    loop.call_soon(remover)
    run_once(loop)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["remover"]


def test_replace_reader(loop, sockpair):
    a, b = sockpair
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append("second")
        a.recv(10)

    loop.add_reader(a, first)
    loop.add_reader(a, second)
    b.send(b"x")
    wait_for_calls(loop, calls)
    assert set(calls) == {"second"}
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_replace_writer(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_writer(a, calls.append, "first")
    loop.add_writer(a, calls.append, "second")
    wait_for_calls(loop, calls)
    assert set(calls) == {"second"}
    assert loop.remove_writer(a) is True


def test_reader_and_writer_same_fd(loop, sockpair):
    a, b = sockpair
    reads = []
    writes = []

    def on_read():
        reads.append(a.recv(10))

    loop.add_reader(a, on_read)
    loop.add_writer(a, writes.append, "w")
    b.send(b"x")
    wait_for_calls(loop, reads)
    wait_for_calls(loop, writes)
    assert reads[0] == b"x"

    # Removing the reader leaves the writer active.
    assert loop.remove_reader(a) is True
    writes.clear()
    b.send(b"y")
    wait_for_calls(loop, writes)
    assert reads == [b"x"]

    # Re-adding the reader, then removing the writer, leaves the reader.
    loop.add_reader(a, on_read)
    assert loop.remove_writer(a) is True
    writes.clear()
    wait_for_calls(loop, reads, 2)
    assert reads[1] == b"y"
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert writes == []
    assert loop.remove_reader(a) is True
    assert loop.remove_writer(a) is False


def test_eof_makes_reader_ready(loop, sockpair):
    a, b = sockpair
    got = []

    def on_read():
        data = a.recv(100)
        got.append(data)
        if not data:
            loop.remove_reader(a)

    loop.add_reader(a, on_read)
    b.send(b"last")
    b.close()
    wait_for_calls(loop, got, 2)
    assert got == [b"last", b""]


def test_pipe_eof(loop, pipe):
    r, w = pipe
    got = []

    def on_read():
        data = os.read(r, 100)
        got.append(data)
        if not data:
            loop.remove_reader(r)

    loop.add_reader(r, on_read)
    os.write(w, b"x")
    os.close(w)
    wait_for_calls(loop, got, 2)
    assert got == [b"x", b""]


def test_writer_on_peer_closed(loop, sockpair):
    # Writing side becomes "ready" when the peer is gone (the write then
    # fails): the writer callback is called.
    a, b = sockpair
    calls = []

    def on_write():
        calls.append("w")
        loop.remove_writer(a)

    b.close()
    loop.add_writer(a, on_write)
    wait_for_calls(loop, calls)
    assert calls == ["w"]


def test_writer_waits_for_buffer_space(loop, sockpair):
    a, b = sockpair
    # Fill a's send buffer.
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []

    def on_write():
        calls.append("w")
        loop.remove_writer(a)

    loop.add_writer(a, on_write)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == []  # still full

    # Drain the peer: the writer becomes ready.
    def drain():
        try:
            while b.recv(1 << 20):
                pass
        except BlockingIOError:
            pass

    loop.add_reader(b, drain)
    wait_for_calls(loop, calls)
    loop.remove_reader(b)
    assert calls == ["w"]


def test_many_fds(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        got = set()

        def on_read(i, s):
            s.recv(10)
            got.add(i)
            loop.remove_reader(s)

        for i, (a, b) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a, on_read, i, a)
        for a, b in pairs[::2]:
            b.send(b"x")
        deadline = loop.time() + 10
        while len(got) < 25 and loop.time() < deadline:
            loop.call_later(0.005, loop.stop)
            loop.run_forever()
        assert got == set(range(0, 50, 2))
        for i, (a, b) in enumerate(pairs):
            assert loop.remove_reader(a) is (i % 2 == 1)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_reregister_after_fd_reuse(loop):
    # Register, remove, close; a new socket may reuse the fd number: it
    # must work as a fresh registration.
    for _ in range(20):
        a, b = socket.socketpair()
        try:
            assert_reader_called(loop, a, b)
        finally:
            a.close()
            b.close()


def test_remove_reader_after_fd_closed(loop):
    # The fd was closed behind the loop's back (the kernel dropped it from
    # the poller): remove_reader still reports the registration removed.
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    a.close()
    try:
        assert loop.remove_reader(fd) is True
        assert loop.remove_reader(fd) is False
    finally:
        b.close()


@pytest.mark.parametrize("first", ["reader", "writer"])
def test_remove_one_direction_after_fd_closed(loop, first):
    # With both directions registered, removing one of a closed fd must
    # change the poller's registration, which fails: as the selector does,
    # the loop raises that OSError and forgets the fd, other direction
    # included, so a new socket on the same number starts afresh.
    second = "writer" if first == "reader" else "reader"
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    loop.add_writer(fd, lambda: None)
    a.close()
    b.close()
    with pytest.raises(OSError) as e:
        getattr(loop, f"remove_{first}")(fd)
    assert e.value.errno == errno.EBADF
    assert getattr(loop, f"remove_{second}")(fd) is False
    assert getattr(loop, f"remove_{first}")(fd) is False
    c, d = socket.socketpair()
    try:
        assert c.fileno() == fd
        assert_reader_called(loop, c, d)
    finally:
        c.close()
        d.close()


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_closed_socket_object_that_was_registered(loop, kind):
    # A closed socket's fileno() is -1; the selector finds its registration
    # by identity, so the removal works (anyio's asyncio backend does this)
    # and a new socket that reuses the fd number gets its callbacks.
    add, remove = (getattr(loop, f"add_{kind}"),
                   getattr(loop, f"remove_{kind}"))
    a, b = socket.socketpair()
    add(a, lambda: None)
    assert loop._selector.get_key(a).fileobj is a
    a.close()
    b.close()
    assert loop._selector.get_key(a).fileobj is a
    assert remove(a) is True
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        remove(a)
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        loop._selector.get_key(a)
    # The fd number is free again: a new socket on it gets its callbacks.
    c, d = socket.socketpair()
    try:
        calls = []
        add(c, calls.append, kind)
        d.send(b"x")
        wait_for_calls(loop, calls)
        assert remove(c) is True
    finally:
        c.close()
        d.close()


def test_registration_keeps_its_first_file_object(loop, sockpair):
    # The epoll selector's key keeps the object the fd was registered with
    # while it stays registered, whatever later calls pass.
    a, b = sockpair
    loop.add_reader(a, lambda: None)
    loop.add_writer(a.fileno(), lambda: None)
    assert loop._selector.get_key(a.fileno()).fileobj is a
    assert loop.remove_reader(a.fileno()) is True
    assert loop._selector.get_key(a).fileobj is a
    assert loop.remove_writer(a.fileno()) is True
    loop.add_writer(a.fileno(), lambda: None)
    assert loop._selector.get_key(a).fileobj == a.fileno()
    assert loop.remove_writer(a) is True


# ------------------------------------------------------------ fd objects


def test_fileobj_with_fileno(loop, pipe):
    r, w = pipe
    robj = FileLike(r)
    wobj = FileLike(w)
    calls = []

    def on_read():
        calls.append(os.read(r, 10))

    loop.add_reader(robj, on_read)
    loop.add_writer(wobj, lambda: (calls.append("w"),
                                   loop.remove_writer(wobj)))
    os.write(w, b"z")
    wait_for_calls(loop, calls, 2)
    assert b"z" in calls and "w" in calls
    # Removal by the object or by the fd number is the same registration.
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(robj) is False


def test_socket_object_and_fd_number_same_registration(loop, sockpair):
    a, b = sockpair
    loop.add_reader(a, lambda: None)
    assert loop.remove_reader(a.fileno()) is True
    loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_writer(a) is True


@pytest.mark.parametrize(
    "bad",
    [object(), "not a file", 1.5, None, b"3", FileLike(None), FileLike(1.5j)],
    ids=["object", "str", "float", "None", "bytes", "fileno-None",
         "fileno-complex"],
)
def test_invalid_file_object(loop, bad):
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.add_reader(bad, lambda: None)
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.add_writer(bad, lambda: None)
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.remove_reader(bad)
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.remove_writer(bad)


def test_fileno_raising_value_error(loop):
    class Closed:
        def fileno(self):
            raise ValueError("I/O operation on closed file")

    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.add_reader(Closed(), lambda: None)


def test_fileno_raising_other_error_propagates(loop):
    class Weird:
        def fileno(self):
            raise KeyError("weird")

    with pytest.raises(KeyError):
        loop.add_reader(Weird(), lambda: None)


@pytest.mark.parametrize("fd", [-1, -100])
def test_negative_fd(loop, fd):
    with pytest.raises(ValueError):
        loop.add_reader(fd, lambda: None)
    with pytest.raises(ValueError):
        loop.add_writer(fd, lambda: None)
    with pytest.raises(ValueError):
        loop.add_reader(FileLike(fd), lambda: None)


def test_closed_socket_object(loop):
    a, b = socket.socketpair()
    a.close()
    b.close()
    # A closed socket's fileno() is -1.
    with pytest.raises(ValueError):
        loop.add_reader(a, lambda: None)


def test_huge_fd_number(loop):
    # Not an open fd: the poller refuses it (the stdlib raises OSError).
    with pytest.raises((OSError, ValueError, OverflowError)):
        loop.add_reader(2**31 - 1, lambda: None)
    with pytest.raises((OSError, ValueError, OverflowError)):
        loop.add_reader(2**70, lambda: None)
    assert loop.remove_reader(2**31 - 1) is False


def test_io_with_running_coroutines(loop, sockpair):
    # A reader callback resolves a future awaited by a task.
    a, b = sockpair

    async def main():
        fut = loop.create_future()

        def on_read():
            loop.remove_reader(a)
            fut.set_result(a.recv(100))

        loop.add_reader(a, on_read)
        loop.call_later(0.01, b.send, b"hello")
        return await fut

    assert run(loop, main()) == b"hello"


def test_remove_reader_inside_its_callback(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_read():
        calls.append(1)
        assert loop.remove_reader(a) is True

    loop.add_reader(a, on_read)
    b.send(b"xx")  # stays readable, but the reader is gone
    wait_for_calls(loop, calls)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == [1]


def test_replace_reader_inside_its_callback(loop, sockpair):
    a, b = sockpair
    calls = []

    def second():
        calls.append("second")
        a.recv(100)
        loop.remove_reader(a)

    def first():
        calls.append("first")
        loop.add_reader(a, second)

    loop.add_reader(a, first)
    b.send(b"x")
    wait_for_calls(loop, calls, 2)
    run_once(loop)
    assert calls == ["first", "second"]


@pytest.mark.parametrize("which", ["reader", "writer"])
def test_cancelled_handle_is_unregistered_when_its_fd_is_ready(loop, sockpair,
                                                               which):
    """A reader/writer Handle (from the private _add_reader/_add_writer
    the stdlib's own code uses) cancelled while registered: when its fd is
    ready, _process_events removes it instead of calling it, so the loop
    does not wake up for it again and again."""
    a, b = sockpair
    calls = []
    add = loop._add_reader if which == "reader" else loop._add_writer
    handle = add(a.fileno(), calls.append, which)
    handle.cancel()
    b.send(b"x")
    run_once(loop)
    assert calls == []
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    with pytest.raises(KeyError):
        loop._selector.get_key(a.fileno())
