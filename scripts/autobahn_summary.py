#!/usr/bin/env python3
"""Summarizes an Autobahn|Testsuite fuzzingclient report (its index.json) in Markdown:
counts per behavior and per close behavior, counts per case group, the groups left
UNIMPLEMENTED (compression), and every other case that is not OK, with its close behavior
and the suite's description of the result.
Exit status 1 when any case FAILED (or its close behavior did)."""

import collections
import json
import os
import sys


def main(path):
    with open(path) as f:
        index = json.load(f)
    report_dir = os.path.dirname(path)
    for agent, cases in sorted(index.items()):
        behaviors = collections.Counter(c["behavior"] for c in cases.values())
        closes = collections.Counter(c["behaviorClose"] for c in cases.values())
        print(f"## {agent}: {len(cases)} cases\n")
        print("| behavior | cases |\n|---|---:|")
        for b, n in sorted(behaviors.items()):
            print(f"| {b} | {n} |")
        print("\n| close behavior | cases |\n|---|---:|")
        for b, n in sorted(closes.items()):
            print(f"| {b} | {n} |")
        groups = collections.defaultdict(collections.Counter)
        for case_id, c in cases.items():
            groups[int(case_id.split(".")[0])][c["behavior"]] += 1
        print("\n| group | " + " | ".join(sorted(behaviors)) + " |")
        print("|---:|" + "---:|" * len(behaviors))
        for g in sorted(groups):
            cells = " | ".join(str(groups[g][b]) for b in sorted(behaviors))
            print(f"| {g} | {cells} |")
        unimplemented = sorted(
            {int(k.split(".")[0]) for k, c in cases.items() if c["behavior"] == "UNIMPLEMENTED"}
        )
        if unimplemented:
            groups_list = ", ".join(str(g) for g in unimplemented)
            print(
                f"\nUNIMPLEMENTED: groups {groups_list} (permessage-deflate, which the hub "
                "does not offer: the suite's handshake gets no extension and the case ends)."
            )
        odd = {
            k: c
            for k, c in cases.items()
            if c["behavior"] not in ("OK", "UNIMPLEMENTED") or c["behaviorClose"] != "OK"
        }
        if odd:
            print("\nCases neither OK nor UNIMPLEMENTED:\n")
            for case_id in sorted(odd, key=lambda k: [int(p) for p in k.split(".")]):
                c = odd[case_id]
                result = ""
                report = c.get("reportfile")
                if report:
                    try:
                        with open(os.path.join(report_dir, report)) as f:
                            result = json.load(f).get("result", "")
                    except (OSError, ValueError):
                        pass
                print(
                    f"- {case_id}: {c['behavior']} (close {c['behaviorClose']}) {result}".rstrip()
                )
        print()
    failed = any(
        c["behavior"] == "FAILED" or c["behaviorClose"] == "FAILED"
        for cases in index.values()
        for c in cases.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
