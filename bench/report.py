#!/usr/bin/env python3
"""Prints the performance targets (docs/targets.md) against a bench/run.sh results
file as a Markdown table: target / measured / status.

    python3 bench/report.py [bench/results.json]

Status: PASS or FAIL against the target; "(smaller size)" when the run was below the size the
target names (the small run on a busy 2-core box only shows the shape); "loadgen-bound" when
the load generator used more CPU than the hub in that run (the figure is then a lower bound).
Standard library only.
"""

import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def fig(run, *keys):
    """results[...]['figures'][k1][k2]..., or None."""
    if not run or not run.get("result"):
        return None
    v = run["result"].get("figures")
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v


def param(run, key):
    if not run or not run.get("result"):
        return None
    return run["result"].get("params", {}).get(key)


def bound(run):
    cpu = (run or {}).get("result", {}) or {}
    return bool(cpu.get("cpu", {}).get("loadgen_bottleneck"))


def status(ok, full_size=True, run=None):
    if ok is None:
        return "not measured"
    s = "PASS" if ok else "FAIL"
    if not full_size:
        s += " (smaller size)"
    if run is not None and bound(run):
        s += ", loadgen-bound"
    if run is not None and run.get("exit", 0) != 0:
        s += f", checks failed (exit {run.get('exit')})"
    return s


def num(v, fmt="{:,.0f}"):
    return "?" if v is None else fmt.format(v)


def rows(doc):
    runs = {r["name"]: r for r in doc.get("runs", [])}
    out = []

    conn = runs.get("connections")
    n = fig(conn, "connected")
    bpc = fig(conn, "hub_bytes_per_connection")
    out.append((
        "memory per connected idle agent (socket + actor), at 100k agents",
        "<= 1 KiB of hub RSS (was 4 KiB)",
        f"{num(bpc / 1024 if bpc else None, '{:.2f}')} KiB per connection at {num(n)} sockets",
        status(None if bpc is None else bpc <= 1024, (n or 0) >= 100_000, conn),
    ))
    capped = [w for w in (conn or {}).get("result", {}).get("warnings", []) if "RLIMIT_NOFILE" in w] if conn else []
    out.append((
        "concurrent agent sockets held on this box",
        ">= 100k",
        f"{num(n)} held ({num(fig(conn, 'failed'))} failed)"
        + (" - capped by RLIMIT_NOFILE" if capped else ""),
        status(None if n is None else n >= 100_000, True, conn)
        if (param(conn, "agents") or 0) >= 100_000 or n is None
        else f"not at target size (asked {param(conn, 'agents'):,})",
    ))
    for admins, target in ((500, 600_000), (50, 1_000_000)):
        r = runs.get(f"fanout-{admins}")
        rate = fig(r, "deliveries_per_sec")
        loss = fig(r, "loss")
        order = fig(r, "order_ok")
        slow = fig(r, "slow_dropped")
        ok = None if rate is None else (rate >= target and loss == 0 and order and slow == 0)
        out.append((
            f"admin fan-out throughput, {admins} admins subscribed to all",
            f">= {target:,} deliveries/s, nothing dropped, every admin in order",
            f"{num(rate)} deliveries/s; loss {num(loss)}, dropped {num(slow)}, "
            + ("ORDER_OK" if order else "order FAILED" if order is not None else "order ?"),
            status(ok, True, r),
        ))
    sweep = runs.get("sweep-200000")
    p99 = fig(sweep, "latency", "p99_ms")
    p999 = fig(sweep, "latency", "p999_ms")
    rate = fig(sweep, "deliveries_per_sec")
    out.append((
        "status change -> admin socket latency at 200k deliveries/s",
        "p99 <= 10 ms, p999 <= 25 ms",
        f"p50 {num(fig(sweep, 'latency', 'p50_ms'), '{:.2f}')} / p99 {num(p99, '{:.2f}')} / "
        f"p999 {num(p999, '{:.2f}')} ms at {num(rate)} deliveries/s "
        f"({num(param(sweep, 'admins'))} admins)",
        status(None if p99 is None else (p99 <= 10 and p999 <= 25), True, sweep),
    ))
    tmax = runs.get("telephony-max")
    eps = fig(tmax, "events_per_sec")
    out.append((
        "telephony events (offer/answer/end) through one adapter socket",
        ">= 100k events/s",
        f"{num(eps)} events/s ({num(fig(tmax, 'acks'))} events, "
        f"ack p99 {num(fig(tmax, 'ack_latency', 'p99_ms'), '{:.2f}')} ms)",
        status(None if eps is None else eps >= 100_000, True, tmax),
    ))
    trate = runs.get("telephony-rate")
    ap99 = fig(trate, "ack_latency", "p99_ms")
    teps = fig(trate, "events_per_sec")
    out.append((
        "telephony ack latency at 50k events/s",
        "p99 ack <= 5 ms",
        f"p50 {num(fig(trate, 'ack_latency', 'p50_ms'), '{:.2f}')} / p99 {num(ap99, '{:.2f}')} ms "
        f"at {num(teps)} events/s (asked {num(param(trate, 'rate'))}/s)",
        status(None if ap99 is None else ap99 <= 5, True, trate),
    ))
    lps = fig(conn, "logins_per_sec")
    churn = runs.get("churn")
    clps = fig(churn, "logins_per_sec")
    out.append((
        "agent logins (connect + hello)",
        ">= 10k/s",
        f"{num(lps)}/s opening {num(n)} sockets; {num(clps)}/s in churn (connect + hello + close)",
        status(None if lps is None else lps >= 10_000, True, conn),
    ))
    snap = runs.get("snapshot")
    fb = fig(snap, "first_byte_ms", "median")
    out.append((
        "admin snapshot of 10k agents",
        "<= 20 ms to first byte of the reply",
        f"median {num(fb, '{:.2f}')} ms (max {num(fig(snap, 'first_byte_ms', 'max'), '{:.2f}')}) "
        f"to first byte, {num(fig(snap, 'full_reply_ms', 'median'), '{:.2f}')} ms to the full "
        f"{num((fig(snap, 'snapshot_bytes') or 0) / 1024, '{:,.0f}')} KiB reply, "
        f"{num(fig(snap, 'snapshot_agents'))} agents",
        status(None if fb is None else fb <= 20, (param(snap, "agents") or 0) >= 10_000, snap),
    ))
    out.append((
        "cost growth",
        "memory O(agents + connections); fan-out work O(deliveries)",
        "compare bytes/connection and CPU per delivery between the small and --full runs",
        "see the two runs",
    ))
    dc, da = runs.get("durability-commit"), runs.get("durability-async")
    if dc or da:
        def p(run, q):
            return fig(run, "ack_latency", f"{q}_ms")
        added = [None if p(dc, q) is None or p(da, q) is None else p(dc, q) - p(da, q)
                 for q in ("p50", "p99")]
        out.append((
            "durable write path: status changes acknowledged after the commit vs at once",
            "(no target) changes/s with --durability commit and async; added ack latency",
            f"commit: {num(fig(dc, 'changes_per_sec'))}/s, ack p50 {num(p(dc, 'p50'), '{:.2f}')} / "
            f"p99 {num(p(dc, 'p99'), '{:.2f}')} ms, {num(fig(dc, 'writes_per_commit'), '{:.0f}')} "
            f"writes per commit; async: {num(fig(da, 'changes_per_sec'))}/s, ack p50 "
            f"{num(p(da, 'p50'), '{:.2f}')} / p99 {num(p(da, 'p99'), '{:.2f}')} ms; added by the "
            f"commit: p50 {num(added[0], '{:+.2f}')} / p99 {num(added[1], '{:+.2f}')} ms "
            f"({num(param(dc or da, 'agents'))} agents)",
            "measured" if dc and da and dc.get("exit") == 0 and da.get("exit") == 0
            else status(None if not (dc and da) else False, True, dc),
        ))
    la = fig(churn, "leaked_agent_actors")
    lc = fig(churn, "leaked_agent_connections")
    growth = fig(churn, "hub_rss_growth_kib")
    out.append((
        "10k agent connects/disconnects churn (reliability table)",
        "0 leaked tasks, sockets, memory back to baseline",
        f"{num(fig(churn, 'logins'))} logins: leaked sockets {num(lc)}, actors {num(la)}, "
        f"RSS growth {num(growth)} KiB",
        status(None if la is None else (la == 0 and lc == 0),
               (param(churn, "agents") or 0) * (param(churn, "cycles") or 0) >= 10_000, churn),
    ))
    return out


def code_stamp(doc):
    """The code measured: its commit, HEAD when different, and uncommitted code changes."""
    code = doc.get("code_commit") or doc.get("git_commit")
    out = f"code of commit {code}"
    if doc.get("git_commit") and doc.get("git_commit") != code:
        out += f" (HEAD {doc.get('git_commit')})"
    dirty, paths = doc.get("git_dirty"), doc.get("git_dirty_paths")
    if dirty and paths:
        out += ", with uncommitted changes to " + ", ".join(f"`{p}`" for p in paths)
    elif dirty:
        out += ", dirty tree (which files was not recorded)"
    elif dirty is None:
        out += ", cleanliness unknown"
    else:
        out += ", clean"
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results.json"
    doc = load(path)
    m = doc.get("machine", {})
    print(f"Size `{doc.get('size')}` (`{doc.get('command')}`, {doc.get('profile')} build), "
          f"{doc.get('started_at')}, {code_stamp(doc)}; machine: {m.get('nproc')} cores, "
          f"{m.get('mem_total_gib')} GiB, {m.get('cpu_model')}, RLIMIT_NOFILE {m.get('rlimit_nofile')}.")
    print()
    print("| what | target | measured | status |")
    print("|---|---|---|---|")
    for what, target, measured, st in rows(doc):
        print(f"| {what} | {target} | {measured} | {st} |")
    if doc.get("failed"):
        print()
        print("Scenarios whose checks failed: " + ", ".join(doc["failed"]))


if __name__ == "__main__":
    main()
