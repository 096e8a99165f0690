#!/usr/bin/env python3
"""The HF transformers peer of `nanoserve bench`: GPT2LMHeadModel.generate with
use_cache=False and True on prompts of the same lengths, the same sweeps and
the same CSV schema, so that bench/report.py draws it on the same axes.

    # weights the engine wrote (nanoserve export-hf --model random:gpt2 --out DIR):
    python3 bench/hf_peer.py --model random:gpt2 --hf-checkpoint DIR --device cuda --dtype bf16 \
        --out hf.csv --sweeps prompt,output --attention naive,fused
    # or the preset's shape with HF's own random init (timings do not depend on weights):
    python3 bench/hf_peer.py --model random:gpt2-xl --device cuda --dtype bf16 --out hf-xl.csv

--model is the engine's spec and goes into the CSV unchanged, so rows pair up
with nanoserve's. Attention: naive = HF "eager", fused = HF "sdpa". Prompts are
seeded random ids of exact lengths (not the engine's ids: timings do not
depend on them); every run generates exactly the asked number of tokens
(min_new_tokens = max_new_tokens), greedy. Part C rows are HF's cache on
(no prefix reuse in HF generate) on the same batch shapes.

Memory: CUDA allocator peak allocated and reserved (empty_cache before each
point's warm-up, peak stats reset before each run), or peak RSS on CPU.
"""

import argparse
import csv
import math
import os
import statistics
import sys
import time

COLUMNS = ["engine", "card", "device", "model", "params_m", "dtype", "attention", "sweep", "kv_cache",
           "batch", "prompt_len", "shared_len", "output_len", "repeats", "total_ms", "total_ms_min",
           "total_ms_max", "ms_per_output_token", "ttft_ms", "decode_ms_per_step", "tokens_per_second",
           "prompt_tokens", "prompt_tokens_computed", "prompt_tokens_reused", "peak_mem_bytes",
           "reserved_mem_bytes", "weights_bytes", "mem_source"]

# n_layer, n_head, n_embd of HF's GPT-2 presets (engine/config.cc has the same).
PRESETS = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
           "gpt2-xl": (48, 25, 1600)}
HF_ATTENTION = {"naive": "eager", "fused": "sdpa"}


def parse_int_list(spec):
    """Same syntax as `nanoserve bench`: 8,16 | a..b*factor | a..b+step."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if ".." in item:
            a, rest = item.split("..", 1)
            op = "*" if "*" in rest else "+"
            b, step = rest.split(op)
            a, b, step = int(a), int(b), int(step)
            v = a
            while v <= b:
                out.append(v)
                v = v * step if op == "*" else v + step
            out.append(b)
        else:
            out.append(int(item))
    seen, unique = set(), []
    for v in out:
        if v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


def points(args):
    """(sweep, kv_cache, batch, prompt_len, shared_len, output_len) in run order."""
    for sweep in args.sweeps.split(","):
        if sweep == "prompt":
            for p in parse_int_list(args.prompt_lens):
                for mode in ("off", "on"):
                    yield sweep, mode, 1, p, 0, args.fixed_output
        elif sweep == "output":
            for o in parse_int_list(args.output_lens):
                for mode in ("off", "on"):
                    yield sweep, mode, 1, args.fixed_prompt, 0, o
        elif sweep == "prefix":
            for b in parse_int_list(args.batch_sizes):
                for s in parse_int_list(args.shared_lens):
                    yield sweep, "on", b, s + args.suffix_len, s, args.prefix_output
        else:
            raise SystemExit("hf_peer: unknown sweep %r" % sweep)


def card_name(torch, device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    n = torch.get_num_threads()
    return "%s (%d %s)" % (name, n, "thread" if n == 1 else "threads")


def reset_peak(torch, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak(torch, device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device), "cuda-allocator"
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, 0, "process-rss"
    return 0, 0, "process-rss"


def load_model(args, torch, transformers, device, dtype):
    if args.hf_checkpoint:
        model = transformers.GPT2LMHeadModel.from_pretrained(args.hf_checkpoint)
    else:
        preset = args.model.split(":", 1)[1] if args.model.startswith("random:") else args.model
        if preset not in PRESETS:
            raise SystemExit("hf_peer: --model %s: give --hf-checkpoint or random:<gpt2 preset>" % args.model)
        n_layer, n_head, n_embd = PRESETS[preset]
        config = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=1024,
                                         vocab_size=50257)
        torch.manual_seed(args.seed)
        with torch.device(device):  # initialise on the device: fast for 1.5B
            model = transformers.GPT2LMHeadModel(config)
    return model.to(device=device, dtype=dtype).eval()


def set_attention(model, impl):
    try:
        model.set_attn_implementation(impl)
    except (AttributeError, TypeError, ValueError):
        model.config._attn_implementation = impl
    return getattr(model.config, "_attn_implementation", impl)


def make_prompts(torch, batch, prompt_len, shared_len, seed, device):
    g = torch.Generator().manual_seed(seed * 1000003 + batch * 1009 + prompt_len * 7 + shared_len)
    shared = torch.randint(0, 50257, (1, shared_len), generator=g).expand(batch, shared_len)
    own = torch.randint(0, 50257, (batch, prompt_len - shared_len), generator=g)
    own[:, 0] = (own[0, 0] + torch.arange(batch)) % 50257  # rows differ right after the shared part
    return torch.cat([shared, own], dim=1).to(device)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:gpt2")
    p.add_argument("--hf-checkpoint", default="")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--attention", default="naive,fused")
    p.add_argument("--sweeps", default="prompt,output")
    p.add_argument("--prompt-lens", default="8..1000*2")
    p.add_argument("--output-lens", default="8..1000*2")
    p.add_argument("--fixed-output", type=int, default=16)
    p.add_argument("--fixed-prompt", type=int, default=16)
    p.add_argument("--shared-lens", default="0,128,256,512,900")
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--suffix-len", type=int, default=32)
    p.add_argument("--prefix-output", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=0, help="skip points not started by then (0 = no limit)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    import transformers

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    class FirstToken:
        """A generate() streamer (put/end) that notes when the first new token
        comes (put() gets the prompt first)."""

        def __init__(self):
            self.calls, self.at = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2:
                sync()
                self.at = time.perf_counter()

        def end(self):
            pass

    start_all = time.perf_counter()
    model = load_model(args, torch, transformers, device, dtype)
    weights = sum(t.numel() * t.element_size() for t in model.parameters())
    params_m = sum(t.numel() for t in model.parameters()) / 1e6
    card = card_name(torch, device)
    todo = list(points(args))
    attentions = args.attention.split(",")
    total = len(todo) * len(attentions)
    print("hf_peer: transformers %s, torch %s, %s, %s (%.0fM params), %d points"
          % (transformers.__version__, torch.__version__, card, args.model, params_m, total), file=sys.stderr)

    def generate(ids, out_len, use_cache, streamer=None):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=out_len,
                              min_new_tokens=out_len, do_sample=False, use_cache=use_cache,
                              pad_token_id=50256, streamer=streamer)

    done = failures = 0
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        f.flush()
        for attention in attentions:
            effective = set_attention(model, HF_ATTENTION[attention])
            print("hf_peer: attention %s -> %s" % (attention, effective), file=sys.stderr)
            with torch.inference_mode():
                generate(make_prompts(torch, 1, 32, 0, args.seed + 1, device), 4, True)  # first-call costs
                for sweep, mode, batch, prompt_len, shared_len, out_len in todo:
                    done += 1
                    label = "%s %s %s B=%d P=%d S=%d O=%d" % (attention, sweep, mode, batch, prompt_len, shared_len, out_len)
                    if args.max_seconds and time.perf_counter() - start_all > args.max_seconds:
                        print("hf_peer: [%d/%d] skipped (--max-seconds): %s" % (done, total, label), file=sys.stderr)
                        continue
                    ids = make_prompts(torch, batch, prompt_len, shared_len, args.seed, device)
                    use_cache = mode == "on"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    try:
                        for _ in range(args.warmup):
                            generate(ids, out_len, use_cache)
                        runs = []
                        for _ in range(args.repeats):
                            streamer = FirstToken() if batch == 1 else None
                            sync()
                            reset_peak(torch, device)
                            t0 = time.perf_counter()
                            out = generate(ids, out_len, use_cache, streamer)
                            sync()
                            t1 = time.perf_counter()
                            assert out.shape[1] == prompt_len + out_len, out.shape
                            mem, reserved, source = peak(torch, device)
                            ttft = (streamer.at - t0) * 1e3 if streamer and streamer.at else float("nan")
                            runs.append(((t1 - t0) * 1e3, ttft, mem, reserved, source))
                    except Exception as e:  # out of memory, or an API change: say which, go on
                        failures += 1
                        print("hf_peer: [%d/%d] FAILED: %s: %s: %s" % (done, total, label, type(e).__name__, e),
                              file=sys.stderr)
                        if failures >= 3 and failures == done:
                            raise
                        continue
                    totals = [r[0] for r in runs]
                    total_ms = statistics.median(totals)
                    ttfts = [r[1] for r in runs if not math.isnan(r[1])]
                    ttft = statistics.median(ttfts) if ttfts else float("nan")
                    row = {"engine": "hf", "card": card, "device": device.type, "model": args.model,
                           "params_m": "%.1f" % params_m, "dtype": args.dtype, "attention": attention,
                           "sweep": sweep, "kv_cache": mode, "batch": batch, "prompt_len": prompt_len,
                           "shared_len": shared_len, "output_len": out_len, "repeats": args.repeats,
                           "total_ms": "%.4f" % total_ms, "total_ms_min": "%.4f" % min(totals),
                           "total_ms_max": "%.4f" % max(totals), "ms_per_output_token": "%.4f" % (total_ms / out_len),
                           "ttft_ms": "%.4f" % ttft,
                           "decode_ms_per_step": "%.4f" % ((total_ms - ttft) / (out_len - 1)) if out_len > 1 else "nan",
                           "tokens_per_second": "%.4f" % (batch * out_len / (total_ms / 1e3)),
                           "prompt_tokens": batch * prompt_len, "prompt_tokens_computed": batch * prompt_len,
                           "prompt_tokens_reused": 0,
                           "peak_mem_bytes": int(statistics.median(r[2] for r in runs)),
                           "reserved_mem_bytes": int(statistics.median(r[3] for r in runs)),
                           "weights_bytes": weights, "mem_source": runs[0][4]}
                    writer.writerow([row[c] for c in COLUMNS])
                    f.flush()
                    print("hf_peer: [%d/%d] %s total %.1f ms, %.2f ms/token, peak %.1f MiB"
                          % (done, total, label, total_ms, total_ms / out_len, row["peak_mem_bytes"] / 1048576.0),
                          file=sys.stderr)
    print("hf_peer: wrote %s in %.0f s" % (args.out, time.perf_counter() - start_all), file=sys.stderr)


if __name__ == "__main__":
    main()
