"""The speed targets of issues 3 and 4, checked against a run's medians.

Server CPU per request, aloop / uvloop (lower is better):
  * at most 0.85 on protocol echo, 1 KiB and 10 KiB;
  * at most 0.60 in sockops mode;
  * at most 0.85 per datagram on every udp cell (issue 4);
  * at most 1.00 on every other cell.
Throughput:
  * aloop's rps at least uvloop's on every cell (udp: datagram round
    trips/s);
  * http-split (header and body in two transport.write calls) within 2% of
    http (one write) on aloop: rps(split) / rps(single) >= 0.98, for each
    concurrency.

A target is checked on the cells of the run that it covers (a cell needs
both aloop and uvloop; the split target needs aloop on both http cells).
The medians are compared as they are, with no allowance for noise: look at
the spread column before believing a near miss or a near pass.

Each CPU and rps check also carries the raw C server's ratio to uvloop
on the same measure, when the run has it: a target that the raw server
misses too is out of reach of any event loop on this machine.
"""

from dataclasses import dataclass

SPLIT_MIN = 0.98


@dataclass
class Check:
    target: str     # short description of the target
    cell: str
    value: float    # the measured ratio
    limit: float
    op: str         # "<=" or ">="
    raw: float = None   # the raw C server's ratio to uvloop, if measured

    def _within(self, value):
        return value <= self.limit if self.op == "<=" else value >= self.limit

    @property
    def met(self):
        return self._within(self.value)

    @property
    def raw_met(self):
        """Whether the raw C server meets the target (None: not measured)."""
        return None if self.raw is None else self._within(self.raw)


def cpu_limit(cell):
    if cell.kind == "echo" and cell.mode == "protocol" and \
            cell.size in (1024, 10 * 1024):
        return 0.85
    if cell.mode == "sockops":
        return 0.60
    if cell.kind == "udp":
        return 0.85
    return 1.00


def _median(summaries, cell, loop, key):
    s = summaries.get(cell.name, {}).get(loop)
    return s[key] if s else None


def _ratios(summaries, cell, key):
    """(aloop / uvloop, raw / uvloop or None) of one median, or None."""
    a, u, r = (_median(summaries, cell, loop, key)
               for loop in ("aloop", "uvloop", "raw"))
    if not (a and u):
        return None
    return a / u, (r / u if r else None)


def evaluate(cells, summaries):
    """cells: the run's Cell list; summaries: {cell name: {loop: summary}}.
    Returns the list of Checks."""
    checks = []
    for cell in cells:
        udp = cell.kind == "udp"
        cpu = _ratios(summaries, cell, "cpu_us_per_request")
        if cpu:
            limit = cpu_limit(cell)
            what = "CPU/datagram" if udp else "CPU/request"
            checks.append(Check(f"{what} <= {limit:.2f}x uvloop",
                                cell.name, cpu[0], limit, "<=", cpu[1]))
        rps = _ratios(summaries, cell, "rps")
        if rps:
            checks.append(Check("datagrams/s >= uvloop" if udp else
                                "rps >= uvloop", cell.name,
                                rps[0], 1.0, ">=", rps[1]))
    by_name = {c.name: c for c in cells}
    for cell in cells:
        if cell.mode != "http-split":
            continue
        single = by_name.get(cell.name.replace("http-split", "http", 1))
        split_rps = _median(summaries, cell, "aloop", "rps")
        single_rps = single and _median(summaries, single, "aloop", "rps")
        if split_rps and single_rps:
            checks.append(Check(
                f"aloop split-write rps >= {SPLIT_MIN:.2f}x single-write",
                cell.name, split_rps / single_rps, SPLIT_MIN, ">="))
    return checks


def check_marks(checks):
    """{cell name: "met" or the missed targets, e.g. "cpu 1.07>0.85"}."""
    misses, seen = {}, set()
    for c in checks:
        seen.add(c.cell)
        if not c.met:
            what = "cpu" if c.target.startswith("CPU") else \
                "split" if "split" in c.target else "rps"
            bad = ">" if c.op == "<=" else "<"
            misses.setdefault(c.cell, []).append(
                f"{what} {c.value:.2f}{bad}{c.limit:g}")
    return {cell: ", ".join(misses.get(cell, ["met"])) for cell in seen}
