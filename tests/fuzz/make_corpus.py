#!/usr/bin/env python3
"""Writes the checked-in seed corpus of the fuzz targets, tests/fuzz/corpus/<target>/.

A few small valid inputs per target (plus a near miss or two), so that the
fuzzers start from the formats' interesting parts. Deterministic; rerun after
changing it and commit the result:  python3 tests/fuzz/make_corpus.py
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
TINY_CONFIG = os.path.join(HERE, "..", "data", "hf_tiny_gpt2", "config.json")


def write(target, name, data):
    path = os.path.join(CORPUS, target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# ---- protobuf wire format, just what the seeds need ----

def varint(v):
    v &= (1 << 64) - 1  # negative int64 as two's complement
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field_varint(number, v):
    return varint(number << 3) + varint(v)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_double(number, v):
    return varint(number << 3 | 1) + struct.pack("<d", v)


# ---- tokenizer: text (also read as ids) ----

def tokenizer():
    texts = {
        "hello": "Hello, world!",
        "contractions": "I'm sure they'll say we've done it, don't you?",
        "whitespace": "line one\n\n   indented\ttab  \r\n",
        "special": "before<|endoftext|>after <|endoftext|><|endof",
        "unicode": "naïve café — 日本語のテキスト 🙂👍🏽 Ελληνικά",
        "digits": "3.14159 and 1,000,000 or 2024-01-01",
    }
    for name, text in texts.items():
        write("tokenizer_fuzzer", name, text)
    # Bytes that are not UTF-8: a lone continuation, a truncated character,
    # an overlong form, a surrogate.
    write("tokenizer_fuzzer", "invalid_utf8", b"a\x80b\xe6\x97c\xc0\xafd\xed\xa0\x80")
    # As ids (uint16 - 8): "Hello, world!", <|endoftext|>, two invalid ids.
    ids = [15496, 11, 995, 0, 50256, 50257, -1]
    write("tokenizer_fuzzer", "ids", b"".join(struct.pack("<H", i + 8) for i in ids))


# ---- safetensors ----

def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, raw bytes)] in file order."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def safetensors_corpus():
    t = "safetensors_fuzzer"
    # A GPT-2 checkpoint's names at toy sizes (C = 2, V = 3, T = 2).
    gpt2 = [
        ("wte.weight", "F32", [3, 2], f32(*range(6))),
        ("wpe.weight", "F32", [2, 2], f32(0.5, -0.5, 1, -1)),
        ("h.0.ln_1.weight", "F32", [2], f32(1, 1)),
        ("h.0.attn.c_attn.weight", "F32", [2, 6], f32(*[0.1 * i for i in range(12)])),
        ("ln_f.bias", "F32", [2], f32(0, 0)),
    ]
    write(t, "gpt2_names", safetensors(gpt2, {"format": "pt"}))
    write(t, "dtypes", safetensors([
        ("f64", "F64", [1], struct.pack("<d", 2.5)),
        ("f16", "F16", [2], struct.pack("<2H", 0x3C00, 0xC000)),
        ("bf16", "BF16", [2], struct.pack("<2H", 0x3F80, 0xFF80)),
        ("i64", "I64", [1], struct.pack("<q", -7)),
        ("i32", "I32", [1], struct.pack("<i", 7)),
        ("i16", "I16", [1], struct.pack("<h", -3)),
        ("i8", "I8", [2], struct.pack("<2b", -1, 1)),
        ("u8", "U8", [3], bytes([0, 128, 255])),
        ("bool", "BOOL", [2], bytes([0, 1])),
    ]))
    write(t, "empty_and_scalar", safetensors([
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F32", [], f32(3)),
    ], {}, pad=False))
    write(t, "no_tensors", safetensors([], {"note": "metadata only"}))
    # Near misses: a bad dtype, offsets past the data.
    write(t, "bad_dtype", safetensors([("x", "F8_E4M3", [1], b"\x00")]))
    bad = safetensors([("x", "F32", [2], f32(1, 2))])
    write(t, "short_data", bad[:-4])


# ---- config.json ----

def config_corpus():
    t = "config_fuzzer"
    with open(TINY_CONFIG, "rb") as f:
        write(t, "hf_tiny_gpt2", f.read())
    write(t, "gpt2", json.dumps({"n_layer": 12, "n_head": 12, "n_embd": 768,
                                 "vocab_size": 50257, "n_positions": 1024,
                                 "layer_norm_epsilon": 1e-5}))
    write(t, "n_ctx_only", '{"n_ctx": 2048, "n_embd": 1600, "n_head": 25, "n_layer": 48}')
    write(t, "defaults", "{}")
    write(t, "nulls", '{"n_layer": null, "layer_norm_epsilon": null, "extra": [1, {"a": "b"}]}')
    write(t, "not_divisible", '{"n_embd": 10, "n_head": 3}')
    # Regression: sizes within their limits whose parameter count overflowed
    # int64 (engine/config.cc).
    write(t, "parameters_overflow", '{"n_layer": 16777216, "n_embd": 16777216, "n_head": 1}')


# ---- the KV wire format: n, KvLayout (n bytes), page bytes ----

def kv_layout(dtype, n_layer, n_head, head_dim, page_size):
    return (field_bytes(1, dtype.encode()) + field_varint(2, n_layer) + field_varint(3, n_head) +
            field_varint(4, head_dim) + field_varint(5, page_size))


def kv_wire_corpus():
    t = "kv_wire_fuzzer"
    itemsize = {"fp32": 4, "bf16": 2, "fp16": 2}
    for name, (dtype, n_layer, n_head, head_dim, page_size, pages) in {
        "fp32_one_page": ("fp32", 2, 2, 4, 2, 1),
        "bf16_two_pages": ("bf16", 1, 2, 2, 4, 2),
        "fp16_no_pages": ("fp16", 3, 1, 8, 16, 0),
        "gpt2_layout_no_pages": ("fp32", 12, 12, 64, 16, 0),
    }.items():
        layout = kv_layout(dtype, n_layer, n_head, head_dim, page_size)
        per_page = n_layer * 2 * n_head * page_size * head_dim * itemsize[dtype]
        page_bytes = bytes(i % 251 for i in range(pages * per_page))
        write(t, name, bytes([len(layout)]) + layout + page_bytes)
    layout = kv_layout("fp32", 1, 1, 1, 1)
    write(t, "partial_page", bytes([len(layout)]) + layout + b"\x01\x02\x03")
    layout = kv_layout("int8", 1, 1, 1, 1)
    write(t, "unknown_dtype", bytes([len(layout)]) + layout)
    # Regression: every size within its limit, but the page's bytes overflow
    # int64 (kv_cache/page_layout.cc).
    layout = kv_layout("fp32", 65536, 65536, 65536, 65536)
    write(t, "page_bytes_overflow", bytes([len(layout)]) + layout)


# ---- requests: max_new_tokens, capacity (int64 each), PrefillRequest ----

def sampling(temperature=None, top_k=None, top_p=None, seed=None):
    out = b""
    if temperature is not None:
        out += field_double(1, temperature)
    if top_k is not None:
        out += field_varint(2, top_k)
    if top_p is not None:
        out += field_double(3, top_p)
    if seed is not None:
        out += field_varint(4, seed)
    return out


def prompt(tokens, sampling_bytes=None):
    packed = b"".join(varint(t) for t in tokens)
    out = field_bytes(1, packed)
    if sampling_bytes is not None:
        out += field_bytes(2, sampling_bytes)
    return out


def request(max_new_tokens, capacity, *prompts):
    return (struct.pack("<qq", max_new_tokens, capacity) +
            b"".join(field_bytes(1, p) for p in prompts))


def request_corpus():
    t = "request_fuzzer"
    write(t, "greedy", request(8, 32, prompt([1, 2, 3])))
    write(t, "sampled", request(16, 32, prompt([5, 6, 7, 8], sampling(0.8, 10, 0.9, 42))))
    write(t, "batch", request(1, 32, prompt([1, 2], sampling(1.0)),
                              prompt([1, 2, 3, 4, 5], sampling(top_p=0.5, seed=7)),
                              prompt([9])))
    write(t, "bad_token", request(4, 32, prompt([1, 64, -1])))
    write(t, "bad_sampling", request(4, 32, prompt([1], sampling(-1.0, -5, 2.0))))
    write(t, "too_long", request(2**62, 2**63 - 1, prompt(list(range(33)))))
    write(t, "empty", request(0, -1))
    # Regression: a valid temperature so small that logits / temperature was
    # inf or 0/0 made the sampler throw (engine/sampler.cc).
    write(t, "tiny_temperature", request(4, 32, prompt([3, 4], sampling(5e-324, 0, 1.0))))
    # Regression: a valid top_p that rounds to 0 as a float dropped every token.
    write(t, "tiny_top_p", request(4, 32, prompt([3, 4], sampling(1.0, 0, 5e-324))))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    tokenizer()
    safetensors_corpus()
    config_corpus()
    kv_wire_corpus()
    request_corpus()


if __name__ == "__main__":
    main()
