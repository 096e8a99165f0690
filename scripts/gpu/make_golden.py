#!/usr/bin/env python3
"""Makes the golden record the engine is checked against (tests/data/).

Runs where HF transformers and tiktoken are installed (the GPU machine's
image). Writes:
  tests/data/hf_tiny_gpt2/{config.json,model.safetensors}
      a tiny GPT2LMHeadModel saved by HF's own save_pretrained;
  tests/data/hf_golden.json
      HF's greedy continuations and last-position logits for a few prompts,
      and tiktoken's gpt2 encodings of a set of tricky strings.
The engine must reproduce all of it (tests/engine/golden_test.cc).
"""
import json
import os
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
VOCAB = os.path.join(ROOT, "data", "gpt2")


def tiny_model():
    torch.manual_seed(1234)
    # initializer_range 0.3 (GPT-2 uses 0.02) spreads the logits so greedy
    # choices have clear margins, not float-rounding ties.
    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=3, n_head=4,
                        initializer_range=0.3, attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    out = os.path.join(DATA, "hf_tiny_gpt2")
    model.save_pretrained(out, safe_serialization=True)
    return model, config


def golden_generations(model, config):
    g = torch.Generator().manual_seed(7)
    prompts = [[1, 2, 3], [100, 200, 300, 400, 500, 17, 9],
               torch.randint(0, config.vocab_size, (20,), generator=g).tolist(), [42]]
    records = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            logits = model(ids).logits[0, -1].tolist()
            out = model.generate(ids, max_new_tokens=24, do_sample=False, use_cache=True,
                                 pad_token_id=0, eos_token_id=None)
        records.append({"prompt": p, "greedy": out[0, len(p):].tolist(),
                        "last_logits": [round(x, 6) for x in logits]})
    return records


def golden_tokenizations():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    ranks = data_gym_to_mergeable_bpe_ranks(os.path.join(VOCAB, "vocab.bpe"),
                                            os.path.join(VOCAB, "encoder.json"))
    enc = tiktoken.Encoding(
        name="gpt2", explicit_n_vocab=50257,
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    texts = ["Hello, world!", " hello world", "hello  world", "I'm can't we'll they've she'd",
             "12345 67.89", "a   b\n\n  c\t\td  ", "héllo wörld", "日本語のテキスト",
             "emoji 🤖🚀 done", "The quick brown fox jumps over the lazy dog.",
             "def f(x):\n    return x**2  # square\n", "Ünïcödé ß ﬁ ½ №", "  leading and trailing  ",
             "'s 's'S 'T", "mixed123abc456", "<|endoftext|> is ordinary here",
             "Καλημέρα κόσμε", "Привет, мир!", "\u00a0nbsp\u2003emsp", "a\r\nb"]
    return [{"text": t, "ids": enc.encode_ordinary(t)} for t in texts]


def main():
    os.makedirs(DATA, exist_ok=True)
    model, config = tiny_model()
    record = {"generator": "scripts/gpu/make_golden.py",
              "transformers": __import__("transformers").__version__,
              "torch": torch.__version__,
              "generations": golden_generations(model, config)}
    try:
        record["tokenizations"] = golden_tokenizations()
    except Exception as e:  # vocabulary not carried: keep the model part
        print("tokenizer golden skipped:", e, file=sys.stderr)
    with open(os.path.join(DATA, "hf_golden.json"), "w") as f:
        json.dump(record, f, ensure_ascii=False)
    print("wrote", os.path.join(DATA, "hf_golden.json"))


if __name__ == "__main__":
    main()
