#!/usr/bin/env python3
"""One warp of PrefillAttentionMmaKernel (engine/cuda/prefill_attention_mma.cu),
emulated on the CPU: the PTX ISA's ldmatrix (.x4, .trans) and
mma.m16n8k16 fragment layouts, the kernel's own address and index
expressions, its online softmax over 64-key tiles with the causal mask,
the per-lane sums added at the end, and a key range [begin, end) whose
rows may see none of it; each case's outputs (or partial results) against
numpy's attention. A check of the kernel's index arithmetic for a machine
without a GPU; it mirrors the kernel by hand, so an edit to one needs the
same edit here. Needs numpy (Debian: python3-numpy).

  python3 engine/cuda/workbench/emulate_prefill_mma.py
"""
import math

import numpy as np

kD, kRow = 64, 72  # the head size, a shared-memory row's elements


def smem(M):
    s = np.zeros((M.shape[0], kRow)); s[:, :kD] = M; return s

def ldmatrix(buf, addr_of_lane, trans=False):
    # addr_of_lane(lane) -> (row, col) of that lane's row start
    regs = [[None]*4 for _ in range(32)]
    for i in range(4):
        rows = [addr_of_lane(8*i + r) for r in range(8)]
        M = np.array([[buf[rr, cc + c] for c in range(8)] for (rr, cc) in rows])
        for L in range(32):
            g, t = L // 4, L % 4
            regs[L][i] = (M[g, 2*t], M[g, 2*t+1]) if not trans else (M[2*t, g], M[2*t+1, g])
    return regs

def mma(d, a, b0, b1):
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for L in range(32):
        g, t = L // 4, L % 4
        A[g, 2*t:2*t+2] = a[L][0]; A[g+8, 2*t:2*t+2] = a[L][1]
        A[g, 2*t+8:2*t+10] = a[L][2]; A[g+8, 2*t+8:2*t+10] = a[L][3]
        B[2*t:2*t+2, g] = b0[L]; B[2*t+8:2*t+10, g] = b1[L]
    Cm = A @ B
    for L in range(32):
        g, t = L // 4, L % 4
        d[L][0] += Cm[g, 2*t]; d[L][1] += Cm[g, 2*t+1]; d[L][2] += Cm[g+8, 2*t]; d[L][3] += Cm[g+8, 2*t+1]

rng = np.random.default_rng(1)


def run(keys_total, positions, begin, end, scale):
    # positions: 16 query positions (rows of the warp)
    Q = rng.standard_normal((16, kD)); K = rng.standard_normal((keys_total, kD)); V = rng.standard_normal((keys_total, kD))
    q_s = smem(Q)
    q_frag = [ldmatrix(q_s, lambda lane, kk=kk: (lane % 8 + 8*(lane//8 % 2), kk*16 + 8*(lane//16))) for kk in range(4)]
    m_lo = [-math.inf]*32; m_hi = [-math.inf]*32; l_lo = [0.0]*32; l_hi = [0.0]*32
    o = [[[0.0]*4 for _ in range(8)] for _ in range(32)]
    fin = lambda m: 0.0 if m == -math.inf else m
    for k0 in range(begin, end, 64):
        Kt = np.zeros((64, kD)); Vt = np.zeros((64, kD))
        n = min(64, end - k0); Kt[:n] = K[k0:k0+n]; Vt[:n] = V[k0:k0+n]
        k_s, v_s = smem(Kt), smem(Vt)
        s = [[[0.0]*4 for _ in range(8)] for _ in range(32)]
        for f2 in range(4):
            for kk in range(4):
                b = ldmatrix(k_s, lambda lane: (16*f2 + lane % 8 + 8*(lane//16), kk*16 + 8*(lane//8 % 2)))
                d0 = [s[L][2*f2] for L in range(32)]; d1 = [s[L][2*f2+1] for L in range(32)]
                mma(d0, [q_frag[kk][L] for L in range(32)], [b[L][0] for L in range(32)], [b[L][1] for L in range(32)])
                mma(d1, [q_frag[kk][L] for L in range(32)], [b[L][2] for L in range(32)], [b[L][3] for L in range(32)])
        mx_lo = [-math.inf]*32; mx_hi = [-math.inf]*32
        for L in range(32):
            g, t = L // 4, L % 4
            for f in range(8):
                for e in range(4):
                    key = k0 + 8*f + 2*t + (e & 1); lo = e < 2
                    v = s[L][f][e]*scale if key <= (positions[g] if lo else positions[g+8]) else -math.inf
                    s[L][f][e] = v
                    if lo: mx_lo[L] = max(mx_lo[L], v)
                    else: mx_hi[L] = max(mx_hi[L], v)
        for arr in (mx_lo, mx_hi):  # shfl_xor 1, 2
            for x in (1, 2):
                arr[:] = [max(arr[L], arr[L ^ x]) for L in range(32)]
        p_frag = [[None]*4 for _ in range(4)]
        pf = [[None]*32 for _ in range(4)]
        for L in range(32):
            new_lo = max(m_lo[L], mx_lo[L]); new_hi = max(m_hi[L], mx_hi[L])
            r_lo = math.exp(m_lo[L] - fin(new_lo)); r_hi = math.exp(m_hi[L] - fin(new_hi))
            m_lo[L], m_hi[L] = new_lo, new_hi
            b_lo, b_hi = fin(new_lo), fin(new_hi)
            sum_lo = sum_hi = 0.0
            for kk in range(4):
                a, bb = s[L][2*kk], s[L][2*kk+1]
                e = lambda x, base: math.exp(x - base)
                r0 = (e(a[0], b_lo), e(a[1], b_lo)); r1 = (e(a[2], b_hi), e(a[3], b_hi))
                r2 = (e(bb[0], b_lo), e(bb[1], b_lo)); r3 = (e(bb[2], b_hi), e(bb[3], b_hi))
                sum_lo += sum(r0) + sum(r2); sum_hi += sum(r1) + sum(r3)
                pf[kk][L] = (r0, r1, r2, r3)
            l_lo[L] = l_lo[L]*r_lo + sum_lo; l_hi[L] = l_hi[L]*r_hi + sum_hi
            for f in range(8):
                o[L][f][0] *= r_lo; o[L][f][1] *= r_lo; o[L][f][2] *= r_hi; o[L][f][3] *= r_hi
        for kk in range(4):
            for f2 in range(4):
                b = ldmatrix(v_s, lambda lane: (16*kk + lane % 8 + 8*(lane//8 % 2), 16*f2 + 8*(lane//16)), trans=True)
                d0 = [o[L][2*f2] for L in range(32)]; d1 = [o[L][2*f2+1] for L in range(32)]
                mma(d0, pf[kk], [b[L][0] for L in range(32)], [b[L][1] for L in range(32)])
                mma(d1, pf[kk], [b[L][2] for L in range(32)], [b[L][3] for L in range(32)])
    for arr in (l_lo, l_hi):
        for x in (1, 2):
            arr[:] = [arr[L] + arr[L ^ x] for L in range(32)]
    # outputs: row r -> (m, l, acc[64])
    out = {}
    for L in range(32):
        g, t = L // 4, L % 4
        for hi in range(2):
            r = g + 8*hi
            m, l = (m_lo[L], l_lo[L]) if hi == 0 else (m_hi[L], l_hi[L])
            acc = out.setdefault(r, [m, l, np.zeros(kD)])[2]
            for f in range(8):
                acc[8*f + 2*t] = o[L][f][2*hi]; acc[8*f + 2*t + 1] = o[L][f][2*hi + 1]
    # reference over [begin, end) with the causal mask
    err = 0.0
    for r in range(16):
        ks = [j for j in range(begin, end) if j <= positions[r]]
        m, l, acc = out[r]
        if not ks:
            assert l == 0 and m == -math.inf, (r, m, l); continue
        sc = np.array([Q[r] @ K[j] * scale for j in ks]); mref = sc.max(); w = np.exp(sc - mref)
        err = max(err, abs(m - mref), abs(l - w.sum()), np.abs(acc - w @ V[ks]).max())
        err = max(err, np.abs(acc / l - (w / w.sum()) @ V[ks]).max())
    return err
CASES = [
    ("5 key tiles, the last partial", 300, list(range(250, 266)), 0, 266, 0.125),
    ("a range no query sees", 300, list(range(100, 116)), 128, 266, 0.125),
    ("a range some queries see", 300, list(range(120, 136)), 128, 266, 0.125),
    ("one tile of 6 keys", 300, [5] * 16, 0, 6, 0.125),
    ("two rows of queries at one position each", 200, list(range(60, 68)) * 2, 64, 128, 0.3),
]
worst = 0.0
for name, *args in CASES:
    err = run(*args)
    worst = max(worst, err)
    print(f"{name}: max error {err:.2e}")
print("ok" if worst < 1e-9 else "MISMATCH")
