"""The Python servers of the network benchmarks, one per mode, on any loop.

    python -m benchmarks.net.servers --loop {asyncio,uvloop,aloop}
        --mode {protocol,buffered,streams,sockops,http,http-split,udp}
        (--port N | --unix PATH) [--lifetime SEC]

Echo modes (each writes back every byte it reads):

  protocol    asyncio.Protocol: data_received(data) -> transport.write(data)
  buffered    asyncio.BufferedProtocol into one 256 KiB bytearray per
              connection; buffer_updated(n) -> transport.write(bytes(view[:n]))
              (a copy: a transport may keep a reference to what it could not
              send at once, and the buffer is reused by the next read)
  streams     asyncio.start_server: reader.read(256 KiB), writer.write,
              await writer.drain()
  sockops     loop.sock_accept, then per connection a task doing
              loop.sock_recv(sock, 256 KiB) and loop.sock_sendall(sock, data)

HTTP modes (asyncio.Protocol, HTTP/1.1 keep-alive):

  http        every request -- bytes up to CRLFCRLF, no body -- answered with
              one fixed 13-byte text response in one transport.write
  http-split  the same response as two transport.write calls: header, body

UDP mode (--port only):

  udp         loop.create_datagram_endpoint(sock=...) with an
              asyncio.DatagramProtocol: datagram_received(data, addr) ->
              transport.sendto(data, addr); error_received is ignored

Every mode listens on a socket made here (127.0.0.1 with SO_REUSEADDR, or a
unix path; backlog 1024; udp: a UDP socket bound to 127.0.0.1) and passed
to the loop, so the listening sockets are the same for all loops; TCP
connections get TCP_NODELAY (the transports set it themselves, as with
create_server(host, port); sockops sets it here).

Control protocol (shared with rawecho.c), one JSON line per event on stdout:
  {"event": "ready", "port": N, ...}  once listening (port 0 for unix)
  SIGUSR1 -> a getrusage(RUSAGE_SELF) mark, then {"event": "mark"}
  SIGTERM -> {"event": "exit", "cpu": user+sys seconds since the mark, ...},
             then the process exits at once (os._exit: no teardown to wait on)
The signals go through loop.add_signal_handler.  --lifetime (default 600 s)
bounds the process with signal.alarm.

    python -m benchmarks.net.servers --loop L --probe
prints the loop's version and class and exits.
"""

import argparse
import asyncio
import importlib
import json
import os
import platform
import resource
import signal
import socket
import sys

LOOPS = ("asyncio", "uvloop", "aloop")
ECHO_MODES = ("protocol", "buffered", "streams", "sockops")
HTTP_MODES = ("http", "http-split")
UDP_MODES = ("udp",)
MODES = ECHO_MODES + HTTP_MODES + UDP_MODES
READ_SIZE = 256 * 1024

HTTP_HEADER = (b"HTTP/1.1 200 OK\r\n"
               b"Content-Type: text/plain\r\n"
               b"Content-Length: 13\r\n"
               b"\r\n")
HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = HTTP_HEADER + HTTP_BODY
HTTP_MAX_REQUEST = 8192


# ---- echo servers ----------------------------------------------------------

class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.view = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.view[:nbytes]))


async def echo_stream(reader, writer):
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def echo_sock(loop, sock):
    try:
        while data := await loop.sock_recv(sock, READ_SIZE):
            await loop.sock_sendall(sock, data)
    except ConnectionError:
        pass
    finally:
        sock.close()


async def sockops_server(loop, lsock):
    tasks = set()
    while True:
        sock, _ = await loop.sock_accept(lsock)
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(echo_sock(loop, sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


# ---- HTTP servers ----------------------------------------------------------

class HttpProtocol(asyncio.Protocol):
    """Answers every request (up to CRLFCRLF) with HTTP_RESPONSE."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        start = 0
        while (end := buf.find(b"\r\n\r\n", start)) >= 0:
            start = end + 4
            self.respond()
        self.buf = buf[start:]
        if len(self.buf) > HTTP_MAX_REQUEST:
            self.transport.close()

    def respond(self):
        self.transport.write(HTTP_RESPONSE)


class HttpSplitProtocol(HttpProtocol):
    """The same response in two writes: header, then body."""

    def respond(self):
        self.transport.write(HTTP_HEADER)
        self.transport.write(HTTP_BODY)


# ---- UDP server ------------------------------------------------------------

class EchoDatagramProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        pass  # e.g. an ICMP error for an echo to a client that has gone


PROTOCOLS = {
    "protocol": EchoProtocol,
    "buffered": EchoBufferedProtocol,
    "http": HttpProtocol,
    "http-split": HttpSplitProtocol,
}


# ---- process: loop, listening socket, control signals ----------------------

def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


def loop_version(name):
    if name == "asyncio":
        return platform.python_version()
    return getattr(importlib.import_module(name), "__version__", "?")


def listening_socket(port, unix_path, udp=False):
    if udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM,
                             socket.IPPROTO_UDP)
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
        return sock
    if unix_path is not None:
        if os.path.exists(unix_path):
            os.unlink(unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix_path)
    else:
        # proto IPPROTO_TCP as getaddrinfo gives it to create_server: asyncio
        # sets TCP_NODELAY only on sockets whose proto says TCP.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def cpu_seconds(ru):
    return ru.ru_utime + ru.ru_stime


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Control:
    """SIGUSR1: take a resource-usage mark.  SIGTERM: report and exit."""

    def __init__(self, loop, unix_path):
        self.unix_path = unix_path
        self.mark = resource.getrusage(resource.RUSAGE_SELF)
        loop.add_signal_handler(signal.SIGUSR1, self.on_mark)
        loop.add_signal_handler(signal.SIGTERM, self.on_exit)
        loop.add_signal_handler(signal.SIGINT, self.on_exit)

    def on_mark(self):
        self.mark = resource.getrusage(resource.RUSAGE_SELF)
        emit(event="mark")

    def on_exit(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        emit(event="exit",
             cpu=cpu_seconds(ru) - cpu_seconds(self.mark),
             user=ru.ru_utime - self.mark.ru_utime,
             sys=ru.ru_stime - self.mark.ru_stime,
             cpu_total=cpu_seconds(ru),
             maxrss_kb=ru.ru_maxrss)
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass
        os._exit(0)


async def start(loop, mode, lsock):
    if mode == "udp":
        transport, _ = await loop.create_datagram_endpoint(
            EchoDatagramProtocol, sock=lsock)
        return transport
    if mode == "streams":
        if lsock.family == socket.AF_UNIX:
            return await asyncio.start_unix_server(echo_stream, sock=lsock)
        return await asyncio.start_server(echo_stream, sock=lsock)
    if mode == "sockops":
        return loop.create_task(sockops_server(loop, lsock))
    factory = PROTOCOLS[mode]
    if lsock.family == socket.AF_UNIX:
        return await loop.create_unix_server(factory, sock=lsock)
    return await loop.create_server(factory, sock=lsock)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.net.servers",
                                description=__doc__.split("\n")[0])
    p.add_argument("--loop", choices=LOOPS, required=True)
    p.add_argument("--mode", choices=MODES)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", type=int,
                       help="TCP port on 127.0.0.1 (0: any)")
    where.add_argument("--unix", metavar="PATH", help="unix socket path")
    p.add_argument("--lifetime", type=int, default=600,
                   help="seconds before SIGALRM ends the process "
                        "(default 600)")
    p.add_argument("--probe", action="store_true",
                   help="print the loop's description and exit")
    args = p.parse_args(argv)

    loop = new_loop(args.loop)
    if args.probe:
        cls = type(loop)
        emit(loop=args.loop, version=loop_version(args.loop),
             cls=f"{cls.__module__}.{cls.__qualname__}",
             debug=loop.get_debug())
        loop.close()
        return 0
    if args.mode is None or (args.port is None) == (args.unix is None):
        p.error("--mode and one of --port, --unix are required")
    if args.mode in UDP_MODES and args.unix is not None:
        p.error("--mode udp takes --port, not --unix")

    signal.alarm(args.lifetime)
    asyncio.set_event_loop(loop)
    lsock = listening_socket(args.port, args.unix, args.mode in UDP_MODES)
    Control(loop, args.unix)
    server = loop.run_until_complete(start(loop, args.mode, lsock))
    emit(event="ready", port=0 if args.unix else lsock.getsockname()[1],
         loop=args.loop, mode=args.mode, pid=os.getpid())
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
