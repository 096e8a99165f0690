#!/usr/bin/env python3
"""Where a lone request's time to first token goes, across the services.

Reads the services' logs written with NANOSERVE_TRACE_FIRST_TOKEN=1
(base/first_token_trace.h: lines "first-token-trace <point> <unix us>"),
lines the points of every process up in time, cuts them into requests at
each "decode_arrived" and prints, for each step between two points in the
order below that a request passed both of, the median and the 10th and
90th percentiles in milliseconds. The points carry no request id: the
requests must have been made one at a time (bench-services does).

  scripts/first_token_split.py LOG [LOG ...]
  scripts/first_token_split.py --self-test   # against made-up logs (CI)
"""
import statistics
import sys

ORDER = [
    "decode_arrived",            # decode: the call started (Generate, or the HTTP API)
    "decode_prefill_started",    # decode: validated, tokenized, the Prefill call starting
    "prefill_arrived",           # prefill: the call's reactor
    "prefill_worker",            # prefill: a worker took it
    "prefill_batch",             # prefill: its batch began
    "prefill_unleased_loaded",   # prefill: prefixes loaded by the store's page index, no match
    "prefill_match_asked",       # prefill: the store's match (where asked)
    "prefill_match_answered",
    "prefill_loaded",            # prefill: the matched prefixes copied into the rows
    "prefill_forward_queued",    # prefill: the forward pass launched (the host's part done)
    "prefill_first_token",       # prefill: the forward pass and sampling done
    "prefill_first_token_sent",  # prefill: the first-token message handed to gRPC
    "decode_first_token_in",     # decode: the message arrived
    "decode_first_token_out",    # decode: streamed on to its caller
]


def requests(paths):
    points = []
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "first-token-trace" and parts[1] in ORDER:
                    points.append((int(parts[2]), parts[1]))
    points.sort()
    out, current = [], None
    for at, point in points:
        if point == "decode_arrived":
            current = {}
            out.append(current)
        if current is not None and point not in current:
            current[point] = at
    return out


def steps(reqs):
    """{(from, to): [ms, ...]}: each request's step from each point it passed
    to the next point of ORDER it passed (a skipped match joins the batch's
    start to the first token)."""
    out = {}
    for r in reqs:
        passed = [p for p in ORDER if p in r]
        for a, b in zip(passed, passed[1:]):
            out.setdefault((a, b), []).append((r[b] - r[a]) / 1000)
    return out


def main(paths):
    reqs = requests(paths)
    if not reqs:
        print("no first-token-trace lines (was NANOSERVE_TRACE_FIRST_TOKEN=1 set?)")
        return 1
    print(f"{len(reqs)} requests\n")
    print("| from | to | requests | median ms | p10 | p90 |")
    print("|---|---|---|---|---|---|")
    found = steps(reqs)
    for (a, b) in sorted(found, key=lambda k: (ORDER.index(k[0]), ORDER.index(k[1]))):
        ms = sorted(found[(a, b)])
        q = lambda f: ms[min(len(ms) - 1, int(f * len(ms)))]
        print(f"| {a} | {b} | {len(ms)} | {statistics.median(ms):.3f} | {q(0.1):.3f} | {q(0.9):.3f} |")
    total = [(r["decode_first_token_out"] - r["decode_arrived"]) / 1000 for r in reqs
             if "decode_arrived" in r and "decode_first_token_out" in r]
    if total:
        print(f"\ndecode_arrived to decode_first_token_out: median {statistics.median(total):.3f} ms "
              f"over {len(total)} requests")
    return 0


def self_test():
    """Two processes' logs, two requests (the second with a match), lined up."""
    import os
    import tempfile
    decode = [("decode_arrived", 1000), ("decode_prefill_started", 1050),
              ("decode_first_token_in", 3000), ("decode_first_token_out", 3100),
              ("decode_arrived", 10000), ("decode_prefill_started", 10060),
              ("decode_first_token_in", 14000), ("decode_first_token_out", 14120)]
    prefill = [("prefill_arrived", 1300), ("prefill_worker", 1400), ("prefill_batch", 1500),
               ("prefill_first_token", 2500), ("prefill_first_token_sent", 2800),
               ("prefill_arrived", 10300), ("prefill_worker", 10400), ("prefill_batch", 10500),
               ("prefill_match_asked", 10600), ("prefill_match_answered", 11200),
               ("prefill_loaded", 11300), ("prefill_forward_queued", 11500),
               ("prefill_first_token", 13500), ("prefill_first_token_sent", 13800),
               ("unknown_point", 5000)]
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, lines in (("decode", decode), ("prefill", prefill)):
            paths.append(os.path.join(d, name + ".log"))
            with open(paths[-1], "w") as f:
                f.write("some other log line\n")
                for point, at in lines:
                    f.write(f"first-token-trace {point} {at}\n")
        reqs = requests(paths)
    assert len(reqs) == 2, reqs
    found = steps(reqs)
    assert found[("decode_arrived", "decode_prefill_started")] == [0.05, 0.06], found
    assert found[("prefill_batch", "prefill_first_token")] == [1.0], found
    assert found[("prefill_match_asked", "prefill_match_answered")] == [0.6], found
    assert ("prefill_batch", "prefill_match_asked") in found
    assert found[("prefill_loaded", "prefill_forward_queued")] == [0.2], found
    assert found[("prefill_forward_queued", "prefill_first_token")] == [2.0], found
    assert found[("decode_first_token_in", "decode_first_token_out")] == [0.1, 0.12], found
    print("first_token_split self-test: ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
