"""Which scaled_dot_product_attention backend pays a cost the first time it
sees a key length (issue: --attention fused took 40-64 ms per decode step on
a first pass)? For each backend alone, times SDPA on a decode-shaped call
(one query, bf16, GPT-2 124M's heads) at key lengths never seen before, and
again at the same lengths (warm). Prints a table; run on the GPU machine."""
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

B, H, D = 1, 12, 64


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def main():
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    print("| backend | mask | first call per new length (ms, median of 8) | warm (ms) |")
    print("| --- | --- | --- | --- |")
    backends = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]
    base = 100
    for name, backend in backends:
        for masked in (False, True):
            cold, warm = [], []
            for i in range(8):
                base += 1  # a length no backend has seen in this process
                q = torch.randn(B, H, 1, D, device=dev, dtype=torch.bfloat16)
                k = torch.randn(B, H, base, D, device=dev, dtype=torch.bfloat16)
                v = torch.randn_like(k)
                mask = torch.ones(B, 1, 1, base, device=dev, dtype=torch.bool) if masked else None
                try:
                    with sdpa_kernel([backend]):
                        cold.append(timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
                        warm.append(timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
                except RuntimeError as e:
                    cold = None
                    reason = str(e).splitlines()[0][:60]
                    break
            if cold is None:
                print(f"| {name} | {masked} | not available: {reason} | |")
            else:
                cold.sort(); warm.sort()
                print(f"| {name} | {masked} | {cold[4]:.3f} | {warm[4]:.3f} |")
    # What the default choice does with and without cuDNN.
    for label, cudnn in (("default", True), ("default, cuDNN off", False)):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        cold = []
        for i in range(8):
            base += 1
            q = torch.randn(B, H, 1, D, device=dev, dtype=torch.bfloat16)
            k = torch.randn(B, H, base, D, device=dev, dtype=torch.bfloat16)
            cold.append(timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k)))
        cold.sort()
        print(f"| {label} | False | {cold[4]:.3f} | |")


if __name__ == "__main__":
    main()
