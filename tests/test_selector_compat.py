"""loop._selector: the stdlib's own transports read it (the socket
transport's __repr__ asks selector.get_key(fd).events), so it answers like
BaseSelectorEventLoop's selector: SelectorKey(fd, events, (reader, writer)),
KeyError for an unregistered fd, and None once the loop is closed."""
import asyncio
import selectors
import socket

import pytest


def test_transport_repr_reports_polling(loop):
    async def main():
        async def handle(reader, writer):
            writer.write(await reader.read(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname())
        text = repr(writer.transport)
        writer.write(b"hello")
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return text, data

    text, data = loop.run_until_complete(main())
    assert "read=polling" in text, text
    assert data == b"hello"


def test_get_key_reader_writer_and_map(loop):
    a, b = socket.socketpair()
    try:
        with pytest.raises(KeyError):
            loop._selector.get_key(a.fileno())
        loop.add_reader(a, lambda: None)
        key = loop._selector.get_key(a)
        assert key.fd == a.fileno()
        assert key.events == selectors.EVENT_READ
        reader, writer = key.data
        assert isinstance(reader, asyncio.Handle) and writer is None
        loop.add_writer(a, lambda: None)
        key = loop._selector.get_key(a.fileno())
        assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
        assert a.fileno() in loop._selector.get_map()
        loop.remove_reader(a)
        loop.remove_writer(a)
        with pytest.raises(KeyError):
            loop._selector.get_key(a.fileno())
    finally:
        a.close()
        b.close()


def test_selector_is_none_after_close(loop_factory):
    loop = loop_factory()
    assert loop._selector is not None
    loop.close()
    assert loop._selector is None
