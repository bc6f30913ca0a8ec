#!/usr/bin/env python3
"""Results of bench/cluster.sh: the JSON document and a Markdown summary on stdout.

Usage: cluster_report.py RESULTS.jsonl OUT.json SIZE STARTED SECS LOAD_START LOAD_END NOFILE

Per cluster size (1, 2, 3 nodes on one NATS): fan-out deliveries/s, status->admin latency,
telephony events/s; the backplane's cost per change (hub CPU per change per node, from
/proc/<pid>/stat ticks, and the ack latency) against a single node with --durability commit;
the failover time; memory per agent per node while 100k agent sockets are held; and the
model of throughput against nodes that the per-node costs give.
"""
import json
import os
import platform
import sys


def get(d, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def fmt(v, unit="", digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{unit}"


def main():
    jsonl, out, size, started, secs, load0, load1, nofile = sys.argv[1:9]
    runs = [json.loads(line) for line in open(jsonl) if line.strip()]
    by = {r["name"]: r for r in runs}
    doc = {
        "size": size,
        "command": "bench/run.sh --cluster" + (" --smoke" if size == "smoke" else ""),
        "started_at": started,
        "duration_secs": int(secs),
        "machine": {
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "rlimit_nofile": int(nofile),
            "loadavg_start": load0,
            "loadavg_end": load1,
        },
        "runs": runs,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    p = print
    p(f"# Cluster benchmark ({size}, {started}, {secs} s, load {load0.split()[0]} -> {load1.split()[0]})")
    p()
    p("## Fan-out and telephony by cluster size (one NATS, `sync_interval: always`)")
    p()
    p("| nodes | deliveries/s | status->admin p50 | p99 | changes/s | telephony events/s | checks |")
    p("|---|---|---|---|---|---|---|")
    for n in (1, 2, 3):
        fo, tel = by.get(f"fanout-{n}"), by.get(f"telephony-{n}")
        if not fo and not tel:
            continue
        lat = get(fo, "result", "figures", "latency") or {}
        ok = all(r is None or r["exit"] == 0 for r in (fo, tel))
        p(
            f"| {n} | {fmt(get(fo, 'result', 'figures', 'deliveries_per_sec'))} "
            f"| {fmt(lat.get('p50_ms'), ' ms', 2)} | {fmt(lat.get('p99_ms'), ' ms', 2)} "
            f"| {fmt(get(fo, 'result', 'figures', 'changes_per_sec'))} "
            f"| {fmt(get(tel, 'result', 'figures', 'events_per_sec'))} | {'ok' if ok else 'FAILED'} |"
        )
    p()
    p("## Cost of the backplane per change")
    p()
    p("Each agent changes its status again as soon as the previous change is acknowledged.")
    p("CPU per change per node = the node's CPU time in the measured phase / acknowledged changes")
    p("(first node from the load generator; the others in proportion of their /proc ticks).")
    p()
    p("| setup | acked changes/s | ack p50 | ack p99 | hub CPU per change, per node |")
    p("|---|---|---|---|---|")
    per_node_cost = {}
    for name, label in [("durability-single", "single node, `--durability commit`")] + [
        (f"durability-{n}", f"{n} node(s) on NATS") for n in (1, 2, 3)
    ]:
        r = by.get(name)
        if not r:
            continue
        acks = get(r, "result", "figures", "acks") or 0
        lat = get(r, "result", "figures", "ack_latency") or {}
        tck = r.get("clk_tck", 100)
        ticks = r.get("node_cpu_ticks", [])
        # The load generator measures the first node's CPU over the measured phase only
        # (after logins and warm-up); the other nodes are scaled by their share of /proc
        # ticks over the whole run. Without it: ticks over the whole run.
        first = get(r, "result", "cpu", "hub_cores")
        wall = get(r, "result", "cpu", "wall_secs")
        if first is not None and wall and ticks and ticks[0]:
            secs = [first * wall * t / ticks[0] for t in ticks]
        else:
            secs = [t / tck for t in ticks]
        costs = [s * 1e6 / acks if acks else None for s in secs]
        per_node_cost[name] = costs
        p(
            f"| {label} | {fmt(get(r, 'result', 'figures', 'changes_per_sec'))} "
            f"| {fmt(lat.get('p50_ms'), ' ms', 2)} | {fmt(lat.get('p99_ms'), ' ms', 2)} "
            f"| {', '.join(fmt(c, ' µs', 1) for c in costs)} |"
        )
    p()
    c1 = [c for c in per_node_cost.get("durability-1", []) if c]
    c3 = [c for c in per_node_cost.get("durability-3", []) if c]
    if c1 and c3:
        a1, a3 = sum(c1) / len(c1), sum(c3) / len(c3)
        # Per node and change: f (following the stream, every node) + o / N (owning the agent:
        # the actor, the append, the reply; each node owns 1/N of the agents).
        own = max((a1 - a3) * 3 / 2, 0.0)
        follow = max(a1 - own, 0.0)
        p("### Model: throughput against nodes")
        p()
        p(f"From 1 node ({a1:.1f} µs per change) and 3 nodes ({a3:.1f} µs per change per node):")
        p(f"following the stream costs every node f = {follow:.1f} µs per change, owning the")
        p(f"agent o = {own:.1f} µs per change, spread over N nodes. One core per node then takes")
        p("1 / (f + o/N) changes per second:")
        p()
        p("| nodes | changes/s per core (model) |")
        p("|---|---|")
        for n in (1, 2, 3, 6, 12):
            cost = follow + own / n
            p(f"| {n} | {fmt(1e6 / cost) if cost > 0 else '-'} |")
        p()
        p("The follow cost f does not shrink with nodes: it caps the cluster at 1/f changes/s")
        p("per core, and NATS's append rate (one stream) caps it before that with")
        p("`sync_interval: always` (see docs/cluster.md). Deliveries to admins scale with nodes:")
        p("each node serves its own admins.")
        p()
    fo = by.get("failover")
    if fo:
        f = get(fo, "result") or {}
        p("## Failover (kill -9 of one of 3 nodes)")
        p()
        p(
            f"{f.get('interrupted', '-')} agents interrupted; acknowledged again after "
            f"p50 {fmt(f.get('failover_ms_p50'), ' ms')}, p99 {fmt(f.get('failover_ms_p99'), ' ms')}, "
            f"max {fmt(f.get('failover_ms_max'), ' ms')} (contract: <= 5 s); "
            f"{f.get('never_acked_again', '-')} never acknowledged again."
        )
        p()
    hold = by.get("hold")
    if hold:
        h = hold["result"]
        p(f"## Agent sockets held: {h['held']:,} of {h['target']:,} over {len(h['per_node'])} nodes "
          f"({h['loadgen_processes']} load generator processes)")
        p()
        p("| node | agent sockets | RSS before | RSS holding | bytes per agent |")
        p("|---|---|---|---|---|")
        for node in h["per_node"]:
            agents = node["agents"] or 0
            grown = (node["rss_kib"] - node["rss_base_kib"]) * 1024
            p(
                f"| {node['addr']} | {agents:,} | {node['rss_base_kib'] / 1024:.1f} MiB "
                f"| {node['rss_kib'] / 1024:.1f} MiB | {fmt(grown / agents if agents else None)} |"
            )
        p()
    failed = [r["name"] for r in runs if r.get("exit") != 0]
    p("All runs passed their checks." if not failed else f"FAILED: {', '.join(failed)}")


if __name__ == "__main__":
    main()
