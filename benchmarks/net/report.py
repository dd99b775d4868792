"""Text report of a network benchmark run: one table per group of cells
(one row per cell), then the targets.

Per loop: the median requests/s, and the median server CPU time per request
in microseconds (user+sys, getrusage of the server process); for udp cells
the columns are datagram round trips/s (dgram/s) and server CPU per datagram
echoed (us/dgram).  Then the
ratios of medians aloop/uvloop for CPU/request (lower is better) and for
rps (higher is better), the server CPU utilisation of aloop and uvloop
(CPU seconds / wall seconds of the timed window: below ~95% the server was
not the bottleneck, so the rps says more about latency and the client than
about the loop), the largest spread of the row (half the min-max range over
the rounds, as % of the median, over every loop and both metrics; "-" with
one round), and the issue's targets for the cell: "met", or what was
missed.
"""

from benchmarks.net import targets as targets_mod
from benchmarks.net.harness import UDP_LOSS_TIMEOUT

NOISY = 0.10        # others_cpu above this (in CPUs) marks a disturbed run
CLIENT_BOUND = 0.90  # client CPU / wall above this: it may be the limit


def fmt_rate(x):
    if x is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def fmt_us(x):
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def _ratio(summary, key):
    a, u = summary.get("aloop"), summary.get("uvloop")
    if a and u and u[key]:
        return a[key] / u[key]
    return None


def _table(headers, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cells))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths),
                      *(line(r) for r in rows)])


def render(cells, loops, summaries, errors, checks):
    """summaries: {cell: {loop: summary}}; errors: {(cell, loop): [msg]}."""
    marks = targets_mod.check_marks(checks)
    groups = {}
    for cell in cells:
        groups.setdefault(cell.mode, []).append(cell)
    out = []
    for mode, group in groups.items():
        rate, per = ("dgram/s", "us/dgram") if group[0].kind == "udp" else \
            ("rps", "us/req")
        headers = (["cell"] + [f"{l} {rate}" for l in loops] +
                   [f"{l} {per}" for l in loops] +
                   ["a/u cpu", f"a/u {rate}", "a/u util", "spread",
                    "targets"])
        rows = []
        for cell in group:
            s = summaries.get(cell.name, {})
            row = [cell.name]
            for key, fmt in (("rps", fmt_rate),
                             ("cpu_us_per_request", fmt_us)):
                for l in loops:
                    if (cell.name, l) in errors and l not in s:
                        row.append("ERROR")
                    else:
                        row.append(fmt(s[l][key]) if l in s else "-")
            for key in ("cpu_us_per_request", "rps"):
                r = _ratio(s, key)
                row.append("-" if r is None else f"{r:.2f}x")
            a, u = s.get("aloop"), s.get("uvloop")
            row.append(f"{a['server_util']:.0%}/{u['server_util']:.0%}"
                       if a and u else "-")
            spreads = [v[k] for v in s.values() if v["runs"] > 1
                       for k in ("rps_spread_pct", "cpu_spread_pct")]
            row.append(f"±{max(spreads):.0f}%" if spreads else "-")
            row.append(marks.get(cell.name, "-"))
            rows.append(row)
        out.append(f"[{mode}]")
        out.append(_table(headers, rows))
        out.append("")
    return "\n".join(out)


def render_targets(checks):
    if not checks:
        return "targets: nothing to check (needs aloop and uvloop)"
    by_target = {}
    for c in checks:
        by_target.setdefault(c.target, []).append(c)
    lines = ["targets (aloop vs uvloop, medians):"]
    for target, cs in by_target.items():
        met = sum(c.met for c in cs)
        status = "MET" if met == len(cs) else "NOT MET"
        lines.append(f"  {status:7}  {target}: {met}/{len(cs)} cells")
        for c in cs:
            if not c.met:
                raw = ""
                if c.raw is not None:
                    too = "" if c.raw_met else ", misses too"
                    raw = f" (raw C server {c.raw:.2f}x{too})"
                lines.append(f"             {c.cell}: {c.value:.2f}x{raw}")
    misses = [c for c in checks if not c.met and c.raw is not None]
    if misses:
        both = sum(not c.raw_met for c in misses)
        lines.append(f"  of the {len(misses)} missed checks with a raw C "
                     f"server measurement, the raw server misses {both} too")
    return "\n".join(lines)


def render_noise(results):
    """A line on runs disturbed by other work on the benchmark's CPUs."""
    runs = [r for per_loop in results.values() for rs in per_loop.values()
            for r in rs if r.get("others_cpu") is not None]
    noisy = [r for r in runs if r["others_cpu"] > NOISY]
    if not runs:
        return ""
    worst = max(r["others_cpu"] for r in runs)
    if not noisy:
        return (f"noise: no run was disturbed (other work on the benchmark "
                f"CPUs at most {worst:.0%} of a CPU)")
    return (f"noise: {len(noisy)} of {len(runs)} runs had other work on the "
            f"benchmark CPUs above {NOISY:.0%} of a CPU (at most {worst:.0%});"
            f" their numbers are unreliable")


def render_losses(cells, summaries):
    """A line on the udp datagrams lost in the timed runs (an echo missing
    after loadgen's --loss-timeout: the flow waited that long, then sent a
    new datagram), over all rounds."""
    lost = [f"{c.name} {l} ({s['losses']}/{s['round_trips']}"
            f"{', %d late' % s['late'] if s['late'] else ''})"
            for c in cells if c.kind == "udp"
            for l, s in summaries.get(c.name, {}).items() if s.get("losses")]
    if not lost:
        return "udp: no datagram was lost"
    return (f"udp losses (lost/round trips; each cost its flow a "
            f"{UDP_LOSS_TIMEOUT * 1e3:g} ms wait, so dgram/s suffers): "
            + ", ".join(lost))


def render_client_bound(cells, summaries):
    """A line naming the (cell, loop) pairs whose client was nearly always
    on CPU: there the rps may be the client's limit, not the server's."""
    bound = [f"{c.name} {l} ({s['client_util']:.0%})"
             for c in cells for l, s in summaries.get(c.name, {}).items()
             if (s.get("client_util") or 0) > CLIENT_BOUND]
    if not bound:
        return f"client: below {CLIENT_BOUND:.0%} CPU in every cell"
    return (f"client-bound (client above {CLIENT_BOUND:.0%} CPU, so rps "
            f"may be the client's limit): " + ", ".join(bound))
