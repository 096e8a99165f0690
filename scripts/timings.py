#!/usr/bin/env python3
"""Times `nanoserve generate` (GPT-2 124M, random weights) with the KV cache
off and on, and a 32-prompt batch sharing a 900-token prefix with and without
prefix reuse. Every configuration runs in a fresh process, repeated; the first
repeat warms up and is dropped, the table shows the median of the rest.

  scripts/timings.py --device cuda --dtype bf16 --out out/   (GPU machine)
  scripts/timings.py --device cpu --quick                     (here)

Prints a markdown table and writes timings.csv under --out.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompt_text(n):
    # " hello" is one GPT-2 token: n of them make an n-token prompt.
    return " hello" * n


def shared_prefix_batch(batch, prefix, suffix):
    # Distinct first suffix token (" 100", " 101", ...), then " world"s.
    return [prompt_text(prefix) + f" {100 + i}" + " world" * (suffix - 1) for i in range(batch)]


def run(binary, args, prompts, repeat):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(prompts, f)
        path = f.name
    cmd = [binary, "generate", "--prompts-file", path, "--json", "--ignore-eos",
           f"--repeat={repeat}"] + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    os.unlink(path)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    out = json.loads(proc.stdout)
    runs = out["runs"] if "runs" in out else [out]
    stats = [r["stats"] for r in runs[1:]] or [runs[0]["stats"]]
    med = {k: statistics.median(s[k] for s in stats)
           for k in ("ttft_ms", "total_ms", "ms_per_output_token", "decode_ms_per_step",
                     "tokens_per_second", "peak_memory_bytes")}
    med["prompt_tokens"] = stats[0]["prompt_tokens"]
    med["prompt_tokens_computed"] = stats[0]["prompt_tokens_computed"]
    med["output_ids"] = [s["output_ids"] for s in runs[-1]["sequences"]]
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "nanoserve"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--model", default="random:gpt2")
    ap.add_argument("--attention", default="naive,fused")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter points (CPU)")
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--skip-prefix", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "out"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = ["--model", a.model, "--device", a.device, "--dtype", a.dtype]
    if a.quick:
        single = [(8, 32), (128, 32), (512, 32), (128, 128)]
    else:
        single = [(8, 128), (128, 128), (512, 128), (896, 128), (128, 512)]
    rows = []
    for attention in a.attention.split(","):
        if not a.skip_single:
            for prompt, new in single:
                outputs = {}
                for mode in ("off", "on"):
                    m = run(a.binary, base + ["--attention", attention, "--kv-cache", mode,
                                              f"--max-new-tokens={new}"],
                            [prompt_text(prompt)], a.repeat)
                    outputs[mode] = m.pop("output_ids")
                    rows.append(dict(case="single", attention=attention, mode=mode, batch=1,
                                     prompt=prompt, new=new, **m))
                    print(f"{attention} {mode} prompt {prompt} new {new}: "
                          f"{m['ms_per_output_token']:.2f} ms/token", file=sys.stderr, flush=True)
                rows[-1]["same_tokens"] = rows[-2]["same_tokens"] = outputs["off"] == outputs["on"]
        if not a.skip_prefix:
            batch, prefix, suffix, new = (32, 900, 50, 64) if not a.quick else (8, 448, 32, 16)
            prompts = shared_prefix_batch(batch, prefix, suffix)
            outputs = {}
            for mode in ("on", "prefix"):
                extra = ["--cold-prefix-cache"] if mode == "prefix" else []
                m = run(a.binary, base + ["--attention", attention, "--kv-cache", mode,
                                          f"--max-new-tokens={new}"] + extra, prompts,
                        a.repeat if not a.quick else 2)
                outputs[mode] = m.pop("output_ids")
                rows.append(dict(case=f"shared {prefix}+{suffix}", attention=attention, mode=mode,
                                 batch=batch, prompt=prefix + suffix, new=new, **m))
                print(f"{attention} {mode} batch {batch}: {m['total_ms']:.1f} ms", file=sys.stderr,
                      flush=True)
            rows[-1]["same_tokens"] = rows[-2]["same_tokens"] = outputs["on"] == outputs["prefix"]

    keys = ["case", "attention", "mode", "batch", "prompt", "new", "prompt_tokens",
            "prompt_tokens_computed", "ttft_ms", "total_ms", "ms_per_output_token",
            "decode_ms_per_step", "tokens_per_second", "peak_memory_bytes", "same_tokens"]
    with open(os.path.join(a.out, "timings.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    print(f"\n{a.model}, {a.device} {a.dtype}, median of {max(a.repeat - 1, 1)} runs after a warm-up\n")
    print("| case | attention | kv cache | batch | prompt | new | prompt tokens computed | TTFT ms "
          "| total ms | ms / output token | tokens/s | peak MiB | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['attention']} | {r['mode']} | {r['batch']} | {r['prompt']} | "
              f"{r['new']} | {r['prompt_tokens_computed']} | {r['ttft_ms']:.2f} | {r['total_ms']:.1f} | "
              f"{r['ms_per_output_token']:.3f} | {r['tokens_per_second']:.0f} | "
              f"{r['peak_memory_bytes'] / 2**20:.0f} | {r.get('same_tokens', '')} |")


if __name__ == "__main__":
    main()
