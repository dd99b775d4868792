"""TLS over the loop's stream transport (the standard library's sslproto on
top), start_tls() upgrades, and loop.sendfile() over TCP and TLS.

The certificate comes from _net_support (a test CA and a "localhost"
certificate shipped as text): no `openssl` executable or extra package is
needed.
"""

import asyncio
import hashlib
import io
import ssl

import pytest

from _net_support import (EchoProtocol, LOCALHOST4, LOCALHOST6, Notifier,
                          RecordingProtocol, client_ssl_context, fill_pattern,
                          run, server_ssl_context, spin,
                          unix_dir, unix_path)  # noqa: F401 (fixtures)


@pytest.fixture
def server_ctx(tmp_path):
    return server_ssl_context(str(tmp_path))


@pytest.fixture
def client_ctx():
    return client_ssl_context()


class Tracker(Notifier):
    def __init__(self, cls):
        self.cls = cls
        self.protocols = []

    def __call__(self):
        self.protocols.append(self.cls())
        self._notify()
        return self.protocols[-1]

    async def first(self):
        await self.wait(lambda: self.protocols, poll=0.001,
                        what="a connection")
        return self.protocols[0]


MESSAGES = [b"hello", fill_pattern(1_000_000, seed=21), b"bye"]
TOTAL = sum(map(len, MESSAGES))


# ------------------------------------------------------------------- echo


@pytest.mark.parametrize("family", ["tcp4", "tcp6", "unix"])
def test_tls_echo(loop, family, server_ctx, client_ctx, unix_path):
    async def main():
        tracker = Tracker(EchoProtocol)
        if family == "unix":
            server = await loop.create_unix_server(tracker, unix_path,
                                                   ssl=server_ctx)
            tr, proto = await loop.create_unix_connection(
                RecordingProtocol, unix_path, ssl=client_ctx,
                server_hostname="localhost")
        else:
            host = LOCALHOST6 if family == "tcp6" else LOCALHOST4
            server = await loop.create_server(tracker, host, 0,
                                              ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(
                RecordingProtocol, host, port, ssl=client_ctx,
                server_hostname="localhost")
        async with server:
            # The handshake is done when create_connection() returns.
            assert proto.events == ["made"]
            assert isinstance(tr, asyncio.Transport)
            assert tr.get_extra_info("sslcontext") is client_ctx
            sslobj = tr.get_extra_info("ssl_object")
            assert isinstance(sslobj, ssl.SSLObject)
            assert sslobj.server_hostname == "localhost"
            cert = tr.get_extra_info("peercert")
            assert ("commonName", "localhost") in \
                [rdn[0] for rdn in cert["subject"]]
            assert tr.get_extra_info("cipher") is not None
            assert tr.get_extra_info("compression") is None
            assert tr.get_extra_info("socket") is not None
            if family != "unix":
                assert tr.get_extra_info("peername")[1] == port
            # TLS transports cannot write EOF.
            assert tr.can_write_eof() is False

            for msg in MESSAGES:
                tr.write(msg)
            await proto.wait_bytes(TOTAL)
            assert proto.data == b"".join(MESSAGES)

            srv = await tracker.first()
            srv_tr = srv.transport
            assert srv_tr.get_extra_info("sslcontext") is server_ctx
            assert srv_tr.get_extra_info("peercert") is None  # no client cert

            tr.close()
            assert await proto.wait_lost() is None

    run(loop, main())


def test_tls_echo_streams(loop, server_ctx, client_ctx):
    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, LOCALHOST4, 0,
                                            ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                LOCALHOST4, port, ssl=client_ctx,
                server_hostname="localhost")
            data = fill_pattern(2_000_000, seed=22)

            async def send():
                for i in range(0, len(data), 100_000):
                    writer.write(data[i:i + 100_000])
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            got = await reader.readexactly(len(data))
            await sender
            assert got == data
            writer.close()
            await writer.wait_closed()

    run(loop, main())


def test_tls_wrong_hostname(loop, server_ctx, client_ctx):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0,
                                          ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.create_connection(
                    RecordingProtocol, LOCALHOST4, port, ssl=client_ctx,
                    server_hostname="not-localhost.invalid")

    # In debug mode the server side would also report the failed handshake
    # ('Error on transport creation for incoming connection').
    loop.set_debug(False)
    run(loop, main())


def test_tls_untrusted_certificate(loop, server_ctx):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0,
                                          ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA loaded
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.create_connection(
                    RecordingProtocol, LOCALHOST4, port, ssl=ctx,
                    server_hostname="localhost")

    # In debug mode the server side would also report the failed handshake
    # ('Error on transport creation for incoming connection').
    loop.set_debug(False)
    run(loop, main())


# -------------------------------------------------------------- start_tls


def test_start_tls_streams(loop, server_ctx, client_ctx):
    """A plaintext dialogue upgraded to TLS on both sides with
    StreamWriter.start_tls() (which calls loop.start_tls())."""
    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        assert writer.get_extra_info("sslcontext") is server_ctx
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(LOCALHOST4, port)
            assert writer.get_extra_info("sslcontext") is None
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            await writer.start_tls(client_ctx, server_hostname="localhost")
            assert writer.get_extra_info("sslcontext") is client_ctx
            assert writer.get_extra_info("peercert") is not None
            # (lines stay under the StreamReader limit of 64 KiB)
            for line in [b"secret one\n", b"x" * 60_000 + b"\n"]:
                writer.write(line)
                await writer.drain()
                assert await reader.readline() == line.upper()
            writer.close()
            await writer.wait_closed()

    run(loop, main())


def test_start_tls_protocols(loop, server_ctx, client_ctx):
    """loop.start_tls() on a Protocol-level connection: the same protocol
    object keeps receiving (decrypted) data through the new transport."""
    server_side = {}

    class Server(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            if bytes(self.data) == b"STARTTLS\n" and "tls" not in \
                    server_side:
                # Stop reading plaintext before the peer's handshake comes.
                self.transport.pause_reading()
                self.transport.write(b"OK\n")
                server_side["tls"] = asyncio.ensure_future(
                    loop.start_tls(self.transport, self, server_ctx,
                                   server_side=True))

    async def main():
        tracker = Tracker(Server)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(RecordingProtocol,
                                                     LOCALHOST4, port)
            tr.write(b"STARTTLS\n")
            await proto.wait_bytes(3)
            assert proto.data == b"OK\n"
            new_tr = await loop.start_tls(tr, proto, client_ctx,
                                          server_hostname="localhost")
            assert new_tr is not tr
            assert isinstance(new_tr, asyncio.Transport)
            assert new_tr.get_extra_info("sslcontext") is client_ctx
            srv = await tracker.first()
            srv_tr = await asyncio.wait_for(server_side["tls"], 30)
            assert srv_tr.get_extra_info("sslcontext") is server_ctx

            payload = fill_pattern(500_000, seed=23)
            new_tr.write(payload)
            await srv.wait_bytes(len(b"STARTTLS\n") + len(payload))
            assert bytes(srv.data) == b"STARTTLS\n" + payload
            srv_tr.write(b"reply over tls")
            await proto.wait_bytes(3 + 14)
            assert proto.data == b"OK\nreply over tls"
            # Neither protocol saw connection_made again.
            assert proto.events.count("made") == 1
            assert srv.events.count("made") == 1
            new_tr.close()
            assert await proto.wait_lost() is None
            await srv.wait_lost()

    run(loop, main())


# --------------------------------------------------------------- sendfile


class HashingServer(asyncio.Protocol, Notifier):
    def __init__(self):
        self.hash = hashlib.sha256()
        self.received = 0
        self.tail = b""
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)
        self.tail = (self.tail + data)[-64:]
        self._notify()

    def connection_lost(self, exc):
        self.lost = True
        self._notify()


SENDFILE_SIZE = 10 * 1024 * 1024


@pytest.fixture
def big_file(tmp_path):
    content = fill_pattern(SENDFILE_SIZE, seed=24)
    path = tmp_path / "sendfile.bin"
    path.write_bytes(content)
    return path, content


def test_sendfile_tcp(loop, big_file):
    path, content = big_file

    async def main():
        tracker = Tracker(HashingServer)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(RecordingProtocol,
                                                     LOCALHOST4, port)
            srv = await tracker.first()
            with open(path, "rb") as f:
                sent = await loop.sendfile(tr, f)
                assert sent == len(content)
                assert f.tell() == len(content)
            # The transport is usable afterwards, and data written now
            # comes after the file.
            assert tr.is_reading()
            tr.write(b"<tail>")
            await srv.wait(lambda: srv.received >= len(content) + 6)
            assert srv.received == len(content) + 6
            assert srv.hash.hexdigest() == \
                hashlib.sha256(content + b"<tail>").hexdigest()
            # Reading still works too.
            srv.transport.write(b"back")
            await proto.wait_bytes(4)
            tr.close()
            await proto.wait_lost()

    run(loop, main())


def test_sendfile_offset_and_count(loop, big_file):
    path, content = big_file

    async def main():
        tracker = Tracker(HashingServer)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(RecordingProtocol,
                                                     LOCALHOST4, port)
            srv = await tracker.first()
            with open(path, "rb") as f:
                sent = await loop.sendfile(tr, f, 12345, 1_000_000)
                assert sent == 1_000_000
                assert f.tell() == 12345 + 1_000_000
            await srv.wait(lambda: srv.received >= 1_000_000)
            assert srv.hash.hexdigest() == hashlib.sha256(
                content[12345:12345 + 1_000_000]).hexdigest()
            tr.close()
            await proto.wait_lost()

    run(loop, main())


def test_sendfile_write_refused_while_in_progress(loop, big_file):
    path, content = big_file

    async def main():
        tracker = Tracker(HashingServer)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(RecordingProtocol,
                                                     LOCALHOST4, port)
            srv = await tracker.first()
            srv.transport.pause_reading()  # so that sendfile must wait
            with open(path, "rb") as f:
                task = asyncio.ensure_future(loop.sendfile(tr, f))
                await spin(loop, 5, 0.005)
                assert not task.done()
                with pytest.raises(RuntimeError, match="sendfile"):
                    tr.write(b"x")
                srv.transport.resume_reading()
                assert await asyncio.wait_for(task, 30) == len(content)
            tr.write(b"after")
            await srv.wait(lambda: srv.received >= len(content) + 5)
            assert srv.hash.hexdigest() == \
                hashlib.sha256(content + b"after").hexdigest()
            tr.close()
            await proto.wait_lost()

    run(loop, main())


def test_sendfile_fallback_for_file_objects_without_fd(loop):
    content = fill_pattern(500_000, seed=25)

    async def main():
        tracker = Tracker(HashingServer)
        server = await loop.create_server(tracker, LOCALHOST4, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(RecordingProtocol,
                                                     LOCALHOST4, port)
            srv = await tracker.first()
            f = io.BytesIO(content)
            assert await loop.sendfile(tr, f) == len(content)
            await srv.wait(lambda: srv.received >= len(content))
            assert srv.hash.digest() == hashlib.sha256(content).digest()
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sendfile(tr, io.BytesIO(b"x"), fallback=False)
            tr.close()
            await proto.wait_lost()
            with pytest.raises(RuntimeError, match="closing"):
                await loop.sendfile(tr, io.BytesIO(b"x"))

    run(loop, main())


def test_sendfile_over_tls(loop, big_file, server_ctx, client_ctx):
    """TLS transports cannot use os.sendfile(): the stdlib falls back to
    reading the file and writing to the transport."""
    path, content = big_file
    size = 2 * 1024 * 1024

    async def main():
        tracker = Tracker(HashingServer)
        server = await loop.create_server(tracker, LOCALHOST4, 0,
                                          ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            tr, proto = await loop.create_connection(
                RecordingProtocol, LOCALHOST4, port, ssl=client_ctx,
                server_hostname="localhost")
            srv = await tracker.first()
            with open(path, "rb") as f:
                assert await loop.sendfile(tr, f, 0, size) == size
                assert f.tell() == size
                with pytest.raises(RuntimeError, match="fallback"):
                    await loop.sendfile(tr, f, fallback=False)
            await srv.wait(lambda: srv.received >= size)
            assert srv.hash.digest() == hashlib.sha256(
                content[:size]).digest()
            tr.close()
            await proto.wait_lost()

    run(loop, main())
