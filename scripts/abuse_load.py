#!/usr/bin/env python3
"""Issue 22's load on decode's HTTP front door: N concurrent streamed
completions plus S slow sockets (each sends a request's headers a byte at a
time), while /health is polled every 100 ms. Prints how each completion ended
(200 streamed to [DONE], or its HTTP status), /health's latencies, and
decode's resident memory (VmRSS, VmHWM of /proc/PID/status) before and after.

  scripts/abuse_load.py --port 8000 --pid $(pidof nanoserve-decode) \
      --streams 1000 --slow 500 --max_tokens 8

With an API key on decode (--api_key / $NANOSERVE_API_KEY) pass --api_key
(default: $NANOSERVE_API_KEY). A completion counts as served only if it
streamed to [DONE]; any other HTTP status (429, 503) is a refusal with a
status; "connect:"/"read:" outcomes are failures without one.

Standard library only (asyncio), so it runs wherever python3 does.
"""
import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import socket
import statistics
import time


def vm(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) // 1024  # MiB
    except OSError:
        return -1
    return -1


async def completion(host, port, body, timeout, api_key):
    """One streamed completion: its status ("200" only if it ended in [DONE])."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except Exception as e:  # refused, reset, timed out
        return f"connect: {type(e).__name__}"
    try:
        data = json.dumps(body).encode()
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"{auth}Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                     + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
        status = raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/1.1 ") else "no response"
        if status == "200" and b"data: [DONE]" not in raw:
            return "200 without [DONE]"
        return status
    except Exception as e:
        return f"read: {type(e).__name__}"
    finally:
        writer.close()


async def slow_socket(host, port, stop):
    """Sends a request's headers a byte every second until told to stop."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except Exception:
        return "connect failed"
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10000
    try:
        for byte in request:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1.0)
        return "held"
    except Exception:
        return "cut off"  # the server's request timeout
    finally:
        writer.close()


def poll_health(host, port, stop, results):
    """GET /health every 100 ms until `stop` is set; puts (latencies in ms,
    failures) on `results`. Runs in a process of its own with blocking
    sockets: polled from the load's event loop, a reply waited behind the
    1 500 other sockets' callbacks, and the client's own delay was measured
    as the server's."""
    latencies, failures = [], []
    while not stop.is_set():
        start = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                raw = b""
                while chunk := s.recv(4096):
                    raw += chunk
            if raw.startswith(b"HTTP/1.1 200"):
                latencies.append((time.monotonic() - start) * 1000)
            else:
                failures.append(raw[:40])
        except Exception as e:
            failures.append(type(e).__name__)
        time.sleep(0.1)
    results.put((latencies, failures))


async def main(a):
    stop_slow, stop_health = asyncio.Event(), multiprocessing.Event()
    rss0 = vm(a.pid, "VmRSS")
    slow = [asyncio.create_task(slow_socket(a.host, a.port, stop_slow)) for _ in range(a.slow)]
    await asyncio.sleep(2)  # the slow sockets are attached
    health_results = multiprocessing.Queue()
    health = multiprocessing.Process(target=poll_health,
                                     args=(a.host, a.port, stop_health, health_results))
    health.start()
    prompt = json.loads(a.prompt) if a.prompt.startswith("[") else a.prompt
    body = {"model": a.model, "prompt": prompt, "max_tokens": a.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True}
    start = time.monotonic()
    results = await asyncio.gather(
        *[completion(a.host, a.port, body, a.timeout, a.api_key) for _ in range(a.streams)])
    elapsed = time.monotonic() - start
    stop_health.set()
    latencies, failures = health_results.get()
    health.join()
    rss1, hwm = vm(a.pid, "VmRSS"), vm(a.pid, "VmHWM")
    stop_slow.set()
    slow_ends = collections.Counter(await asyncio.gather(*slow))
    counts = collections.Counter(results)
    print(f"{a.streams} streamed completions (max_tokens {a.max_tokens}) + {a.slow} slow sockets: "
          f"all ended in {elapsed:.1f} s")
    print("  completions by outcome:", dict(counts))
    print("  slow sockets:", dict(slow_ends))
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        print(f"  /health: {len(latencies)} answered, p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
              f"max {max(latencies):.1f} ms; {len(failures)} failed {failures[:3]}")
    print(f"  decode VmRSS {rss0} MiB before, {rss1} MiB after, VmHWM {hwm} MiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--pid", type=int, default=0, help="decode's pid, for its memory")
    p.add_argument("--model", default="tiny")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--slow", type=int, default=500)
    p.add_argument("--max_tokens", type=int, default=8)
    p.add_argument("--prompt", default="The quick brown fox",
                   help="text, or token ids as JSON ('[1, 2, 3]': the tiny test checkpoint's "
                        "vocabulary is 512 tokens)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--api_key", default=os.environ.get("NANOSERVE_API_KEY", ""))
    asyncio.run(main(p.parse_args()))
