"""High-level asyncio on top of the loop: runners, policies, tasks, streams,
subprocesses, executors.  All of it must work unchanged on aloop."""

import asyncio
import concurrent.futures
import contextvars
import gc
import socket
import sys
import threading

import pytest

from _aloop_support import (
    TIMEOUT,
    is_kind,
    loop_class,
    new_loop_function,
    run,
    run_function,
)

# ---------------------------------------------------------------- runners


async def _running_loop():
    return asyncio.get_running_loop()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_loop_factory(loop_kind):
    factory = new_loop_function(loop_kind)

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return loop, is_kind(loop, loop_kind)

    loop, ok = asyncio.run(main(), loop_factory=factory)
    assert ok, type(loop)
    assert loop.is_closed()


def test_runner_loop_factory(loop_kind):
    factory = new_loop_function(loop_kind)
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        assert is_kind(loop, loop_kind), type(loop)
        assert runner.run(_running_loop()) is loop
        # The same loop serves several run() calls.
        assert runner.run(_running_loop()) is loop
        assert runner.run(asyncio.sleep(0.001, "slept")) == "slept"
    assert loop.is_closed()


def test_runner_debug_and_context(loop_kind):
    factory = new_loop_function(loop_kind)
    var = contextvars.ContextVar("var")

    async def set_var():
        var.set("kept")

    async def get_var():
        return var.get(None), asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=factory) as runner:
        runner.run(set_var())
        # Runner runs every coroutine in the same context.
        assert runner.run(get_var()) == ("kept", True)


def test_run_returns_result(loop_kind):
    run_ = run_function(loop_kind)

    async def main(x):
        await asyncio.sleep(0.001)
        return x * 2

    assert run_(main(21)) == 42


def test_run_uses_expected_loop_and_closes_it(loop_kind):
    loop = run_function(loop_kind)(_running_loop())
    assert is_kind(loop, loop_kind), type(loop)
    assert loop.is_closed()


def test_run_debug(loop_kind):
    run_ = run_function(loop_kind)

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run_(main(), debug=True) is True
    assert run_(main(), debug=False) is False


def test_run_propagates_exception(loop_kind):
    class Boom(Exception):
        pass

    async def main():
        await asyncio.sleep(0)
        raise Boom()

    with pytest.raises(Boom):
        run_function(loop_kind)(main())


def test_run_refuses_non_coroutine(loop_kind):
    with pytest.raises(ValueError, match="a coroutine was expected"):
        run_function(loop_kind)(42)


def test_run_refused_inside_running_loop(loop_kind):
    run_ = run_function(loop_kind)
    errors = []

    async def main():
        coro = asyncio.sleep(0)
        try:
            run_(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()

    run_(main())
    assert len(errors) == 1
    assert "cannot be called from a running event loop" in errors[0]


def test_run_cancels_leftover_tasks_and_finalizes_asyncgens(loop_kind):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("agen-finalized")

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("task-cancelled")
            raise

    keep = []

    async def main():
        g = agen()
        await g.__anext__()
        keep.append(g)  # alive past main(): run() must finalize it
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    run_function(loop_kind)(main())
    assert sorted(log) == ["agen-finalized", "task-cancelled"]


def test_event_loop_policy(loop_kind, restore_policy):
    if loop_kind == "aloop":
        import aloop

        policy = aloop.EventLoopPolicy()
        assert isinstance(policy, asyncio.DefaultEventLoopPolicy)
    else:
        policy = asyncio.DefaultEventLoopPolicy()
    asyncio.set_event_loop_policy(policy)
    assert asyncio.get_event_loop_policy() is policy

    loop = asyncio.new_event_loop()
    try:
        assert is_kind(loop, loop_kind), type(loop)
        asyncio.set_event_loop(loop)
        assert asyncio.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()

    # asyncio.run() goes through the policy.
    loop = asyncio.run(_running_loop())
    assert is_kind(loop, loop_kind), type(loop)


def test_install(loop_kind, restore_policy):
    if loop_kind == "aloop":
        import aloop

        assert aloop.install() is None
        assert isinstance(asyncio.get_event_loop_policy(),
                          aloop.EventLoopPolicy)
    else:
        asyncio.set_event_loop_policy(None)  # the stdlib's default
    loop = asyncio.new_event_loop()
    try:
        assert is_kind(loop, loop_kind), type(loop)
    finally:
        loop.close()
    with asyncio.Runner() as runner:
        assert is_kind(runner.get_loop(), loop_kind)


def test_policy_new_loops_in_threads(loop_kind, restore_policy):
    if loop_kind == "aloop":
        import aloop

        aloop.install()
    else:
        asyncio.set_event_loop_policy(None)
    results = []

    def thread():
        results.append(asyncio.run(_running_loop()))

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert len(results) == 1
    assert is_kind(results[0], loop_kind)


def test_loop_class(loop_kind, loop):
    assert isinstance(loop, loop_class(loop_kind))
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, asyncio.SelectorEventLoop)


# ---------------------------------------------------------------- tasks


def test_task_group(loop):
    async def work(i):
        await asyncio.sleep(0.001 * i)
        return i

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(work(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert run(loop, main()) == list(range(10))


def test_task_group_failure_cancels_siblings(loop):
    cancelled = []

    async def sibling(i):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def failing():
        await asyncio.sleep(0.001)
        raise KeyError("tg")

    async def main():
        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(sibling(i))
            tg.create_task(failing())

    with pytest.raises(ExceptionGroup) as info:
        run(loop, main())
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert sorted(cancelled) == [0, 1, 2]


def test_timeout(loop):
    async def main():
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(3600)
        except TimeoutError:
            return "timed out"

    assert run(loop, main()) == "timed out"


def test_timeout_not_reached(loop):
    async def main():
        async with asyncio.timeout(10) as cm:
            await asyncio.sleep(0.001)
        return cm.expired()

    assert run(loop, main()) is False


def test_wait_for(loop):
    async def slow():
        await asyncio.sleep(3600)

    async def fast():
        await asyncio.sleep(0.001)
        return "fast"

    async def main():
        assert await asyncio.wait_for(fast(), 10) == "fast"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), 0.02)
        return "ok"

    assert run(loop, main()) == "ok"


def test_gather(loop):
    async def work(i):
        await asyncio.sleep(0.001 * (5 - i))
        if i == 3:
            raise ValueError(i)
        return i

    async def main():
        results = await asyncio.gather(*(work(i) for i in range(5)),
                                       return_exceptions=True)
        return results

    results = run(loop, main())
    assert results[:3] == [0, 1, 2] and results[4] == 4
    assert isinstance(results[3], ValueError)


def test_wait_first_completed(loop):
    async def main():
        fast = asyncio.ensure_future(asyncio.sleep(0.001, "fast"))
        slow = asyncio.ensure_future(asyncio.sleep(3600, "slow"))
        done, pending = await asyncio.wait(
            {fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        return done == {fast} and pending == {slow}

    assert run(loop, main())


def test_task_cancel(loop):
    async def victim():
        await asyncio.sleep(3600)

    async def main():
        t = asyncio.create_task(victim())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return t.cancelled()

    assert run(loop, main()) is True


def test_queue(loop):
    async def producer(q, n):
        for i in range(n):
            await q.put(i)
        await q.put(None)

    async def consumer(q):
        got = []
        while (item := await q.get()) is not None:
            got.append(item)
            q.task_done()
        q.task_done()
        return got

    async def main():
        q = asyncio.Queue(maxsize=3)
        prod = asyncio.create_task(producer(q, 200))
        got = await consumer(q)
        await prod
        await q.join()
        return got

    assert run(loop, main()) == list(range(200))


def test_event_lock_condition_semaphore(loop):
    async def main():
        ev = asyncio.Event()
        lock = asyncio.Lock()
        sem = asyncio.Semaphore(2)
        order = []

        async def worker(i):
            await ev.wait()
            async with sem:
                async with lock:
                    order.append(i)
                await asyncio.sleep(0.001)

        tasks = [asyncio.create_task(worker(i)) for i in range(6)]
        await asyncio.sleep(0.001)
        ev.set()
        await asyncio.gather(*tasks)
        return sorted(order)

    assert run(loop, main()) == list(range(6))


def test_many_tasks(loop):
    async def work(i):
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return i

    async def main():
        return sum(await asyncio.gather(*(work(i) for i in range(2000))))

    assert run(loop, main()) == sum(range(2000))


# ---------------------------------------------------------------- threads


def test_to_thread(loop):
    var = contextvars.ContextVar("var")

    def blocking(x):
        return x + 1, threading.current_thread() is not threading.main_thread(), var.get()

    async def main():
        var.set("propagated")
        return await asyncio.to_thread(blocking, 1)

    assert run(loop, main()) == (2, True, "propagated")


def test_run_in_executor_default(loop):
    async def main():
        return await loop.run_in_executor(None, sum, [1, 2, 3])

    assert run(loop, main()) == 6
    run(loop, loop.shutdown_default_executor())


def test_run_in_executor_custom(loop):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        async def main():
            futs = [loop.run_in_executor(pool, pow, 2, i) for i in range(8)]
            return await asyncio.gather(*futs)

        assert run(loop, main()) == [2 ** i for i in range(8)]


def test_shutdown_default_executor(loop):
    ran = []

    async def main():
        await loop.run_in_executor(None, ran.append, 1)

    run(loop, main())
    run(loop, loop.shutdown_default_executor())
    assert ran == [1]
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, ran.append, 2)


def test_shutdown_asyncgens(loop):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finalized")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g

    g = run(loop, main())
    assert log == []
    run(loop, loop.shutdown_asyncgens())
    assert log == ["finalized"]
    del g


def test_asyncgen_finalizer_hook(loop):
    # An async generator dropped while the loop runs is finalized by the
    # loop (aclose() scheduled through the finalizer hook).
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            log.append("finalized")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(100):
            await asyncio.sleep(0)
            if log:
                break
        return list(log)

    assert run(loop, main()) == ["finalized"]


# ---------------------------------------------------------------- streams


async def _echo_handler(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def test_streams_echo_tcp(loop):
    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = []
        for i in range(20):
            writer.write(f"line {i}\n".encode())
            await writer.drain()
            lines.append(await reader.readline())
        assert writer.get_extra_info("peername")[1] == port
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return lines

    assert run(loop, main()) == [f"line {i}\n".encode() for i in range(20)]


def test_streams_large_transfer(loop):
    payload = bytes(range(256)) * 4096 * 2  # 2 MiB: exercises flow control

    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await reader.read(-1)
        await sender
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return received

    assert run(loop, main()) == payload


def test_streams_many_clients(loop):
    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%d\n" % i)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return int(line)

    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            results = await asyncio.gather(*(client(port, i)
                                             for i in range(50)))
        return results

    assert run(loop, main()) == list(range(50))


def test_streams_echo_unix(loop, tmp_path):
    path = str(tmp_path / "echo.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo_handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"hello unix\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"hello unix\n"


def test_streams_ipv6_loopback(loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
    except OSError as exc:
        pytest.skip(f"::1 not available: {exc}")

    async def main():
        server = await asyncio.start_server(_echo_handler, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"v6\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"v6\n"


def test_connection_refused(loop):
    # Find a port with nothing listening on it.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        return "refused"

    assert run(loop, main()) == "refused"


def test_protocol_callbacks(loop):
    events = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            events.append("made")
            self.transport = transport

        def data_received(self, data):
            events.append(("data", data))
            self.transport.write(data.upper())

        def eof_received(self):
            events.append("eof")
            return False  # close

        def connection_lost(self, exc):
            events.append(("lost", exc))

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"abc")
        assert await reader.readexactly(3) == b"ABC"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        for _ in range(1000):  # bounded: at most ~5 s
            if events and events[-1][0] == "lost":
                break
            await asyncio.sleep(0.005)

    run(loop, main())
    assert events == ["made", ("data", b"abc"), "eof", ("lost", None)]


def test_datagram_echo(loop):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result((data, addr))

    async def main():
        server, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        client, proto = await loop.create_datagram_endpoint(
            Client, remote_addr=addr)
        client.sendto(b"ping")
        data, from_addr = await proto.got
        client.close()
        server.close()
        return data, from_addr == addr

    assert run(loop, main()) == (b"gnip", True)


# ---------------------------------------------------------------- sockets


def test_sock_operations(loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            connect = asyncio.ensure_future(
                loop.sock_connect(client, listener.getsockname()))
            conn, _ = await loop.sock_accept(listener)
            await connect
            conn.setblocking(False)
            with conn:
                await loop.sock_sendall(client, b"x" * 100_000)
                buf = bytearray()
                while len(buf) < 100_000:
                    buf += await loop.sock_recv(conn, 65536)
                await loop.sock_sendall(conn, b"reply")
                into = bytearray(16)
                n = await loop.sock_recv_into(client, into)
                return bytes(buf) == b"x" * 100_000, bytes(into[:n])
        finally:
            client.close()
            listener.close()

    assert run(loop, main()) == (True, b"reply")


def test_sock_recv_cancel(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # The fd is usable again after the cancelled wait.
        b.send(b"after")
        return await loop.sock_recv(a, 10)

    try:
        assert run(loop, main()) == b"after"
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- processes


def test_subprocess_exec_communicate(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import sys; data = sys.stdin.read(); "
            "sys.stdout.write(data.upper()); sys.stderr.write('err')",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(b"hello subprocess")
        return out, err, proc.returncode

    assert run(loop, main()) == (b"HELLO SUBPROCESS", b"err", 0)


def test_subprocess_exit_code_and_wait(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.exit(7)")
        return await proc.wait()

    assert run(loop, main()) == 7


def test_subprocess_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo shell-ok", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.strip(), proc.returncode

    assert run(loop, main()) == (b"shell-ok", 0)


def test_subprocess_kill(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)")
        proc.kill()
        return await asyncio.wait_for(proc.wait(), TIMEOUT)

    assert run(loop, main()) < 0
