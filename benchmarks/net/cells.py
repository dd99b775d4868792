"""The cells of the network benchmark matrix, and the --only filter.

A cell is one client workload against one server mode:

  echo   {protocol,buffered,streams,sockops} x size {1k,10k,100k}
         x concurrency {c10,c1} x transport {tcp,unix}; loadgen echo mode
  http   {http,http-split} x {c10,c1} over tcp; wrk
  churn  a connection per request (connect, 1 KiB request, reply, close)
         x {c10,c1} x {tcp,unix}, against the protocol-mode server; loadgen
         churn mode, rps = connections/s
  udp    datagram echo, payload {64,512,1400} x {c10,c1} flows, UDP on
         127.0.0.1; loadgen udp mode, rps = datagram round trips/s

Cell names are their tokens joined by "/": "protocol/1k/c10/tcp",
"http-split/c1/tcp", "churn/1k/c10/unix", "udp/64/c10" (udp cells carry no
transport token: "udp" is both their group and their transport).
``--only`` takes comma-separated filters; a filter is tokens joined by "/"
(in any order), and a cell is selected when it has all of them:
"protocol/1k" is both concurrencies and both transports, "c1/unix" every
single-connection unix cell, "http,churn" all http and churn cells,
"udp/c1" the single-flow udp cells.
"""

from dataclasses import dataclass

ECHO_MODES = ("protocol", "buffered", "streams", "sockops")
HTTP_MODES = ("http", "http-split")
SIZES = (1024, 10 * 1024, 100 * 1024)
CONCS = (10, 1)
TRANSPORTS = ("tcp", "unix")
CHURN_SIZE = 1024
UDP_SIZES = (64, 512, 1400)


def size_tag(size):
    return f"{size // 1024}k" if size % 1024 == 0 else str(size)


@dataclass(frozen=True)
class Cell:
    kind: str       # "echo", "http", "churn", "udp"
    mode: str       # group name: an echo mode, an http mode, "churn", "udp"
    size: int       # message (udp: payload) size; 0 for http
    conc: int       # connections (udp: flows)
    transport: str  # "tcp", "unix" or "udp"

    @property
    def name(self):
        parts = [self.mode]
        if self.kind != "http":
            parts.append(size_tag(self.size))
        parts.append(f"c{self.conc}")
        if self.kind != "udp":
            parts.append(self.transport)
        return "/".join(parts)

    @property
    def tokens(self):
        return set(self.name.split("/")) | {self.kind}

    @property
    def server_mode(self):
        """The --mode of servers.py for this cell."""
        return "protocol" if self.kind == "churn" else self.mode


def all_cells():
    cells = [Cell("echo", m, s, c, t) for m in ECHO_MODES for s in SIZES
             for c in CONCS for t in TRANSPORTS]
    cells += [Cell("http", m, 0, c, "tcp") for m in HTTP_MODES for c in CONCS]
    cells += [Cell("churn", "churn", CHURN_SIZE, c, t)
              for c in CONCS for t in TRANSPORTS]
    cells += [Cell("udp", "udp", s, c, "udp") for s in UDP_SIZES
              for c in CONCS]
    return cells


def select(only):
    """The cells matching the --only string (None: all).  Raises ValueError
    for a token no cell has."""
    cells = all_cells()
    if not only:
        return cells
    known = set().union(*(c.tokens for c in cells))
    filters = []
    for f in only.split(","):
        tokens = {t for t in f.strip().split("/") if t}
        unknown = tokens - known
        if unknown:
            raise ValueError(f"unknown token(s) {', '.join(sorted(unknown))} "
                             f"in --only; known: {', '.join(sorted(known))}")
        filters.append(tokens)
    return [c for c in cells if any(f <= c.tokens for f in filters)]
