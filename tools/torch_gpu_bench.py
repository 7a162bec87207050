#!/usr/bin/env python3
"""PyTorch side of bench/gpu_bench.sh, on a CUDA GPU (run with the GPU machine's python3).

Cases (any number, in order):
  gemm:LABEL:M:N:K:TA:TB   torch.matmul in bf16 of (M,K) x (K,N) (TA/TB: the operands
                           are stored transposed), CUDA-event timing, median of --reps
  attn:B:T:H:D             F.scaled_dot_product_attention (causal) forward + backward,
                           q/k/v (B,H,T,D), in bf16 and in fp32
  train:SPEC:B:T           the project's PyTorch reference model and optimizer
                           (tools/nanochat_ref.py: forward, MuonAdamW; the settings of
                           tools/torch_train_bench.py) on the GPU: bf16 autocast,
                           torch.compile of forward+loss (--no-compile: eager), attention
                           through SDPA (the reference's masked softmax is replaced
                           by the same causal / sliding-window attention); 1 warm-up
                           step (2 with compile), --steps timed steps, tokens/s at the median.
Prints one line per case, prefixed "torch".
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def cuda_time(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    ts.sort()
    return ts[len(ts) // 2]


def bench_gemm(label, M, N, K, ta, tb, reps):
    a = torch.randn((K, M) if ta else (M, K), device="cuda", dtype=torch.bfloat16)
    b = torch.randn((N, K) if tb else (K, N), device="cuda", dtype=torch.bfloat16)
    A = a.t() if ta else a
    Bm = b.t() if tb else b
    t = cuda_time(lambda: torch.matmul(A, Bm), reps)
    print(f"torch gemm {label:<12} {M:6d} {N:6d} {K:6d} {'t' if ta else 'n'}{'t' if tb else 'n'} bf16: "
          f"{t * 1e3:8.3f} ms {2.0 * M * N * K / t * 1e-12:7.1f} TFLOP/s", flush=True)


def bench_attn(B, T, H, D, reps):
    fl = 3.5 * 4.0 * B * H * T * T * D / 2.0  # causal fwd (2 matmuls) + bwd (5), halved
    for dt in (torch.bfloat16, torch.float32):
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
        dout = torch.randn(B, H, T, D, device="cuda", dtype=dt)

        def step():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            q.grad = k.grad = v.grad = None
            y.backward(dout)

        t = cuda_time(step, reps)
        print(f"torch attention fwd+bwd B={B} T={T} H={H} D={D} causal {str(dt).split('.')[-1]} (SDPA): "
              f"{t * 1e3:8.3f} ms  {fl / t * 1e-12:6.1f} TFLOP/s", flush=True)


def bench_train(spec, B, T, steps, compile_):
    import nanochat_ref as ref
    import torch_train_bench as ttb

    cfg = ref.load_spec(spec)
    P = {n: t.to("cuda").requires_grad_(True) for n, t in ref.init_params(cfg, dtype=torch.float32).items()}
    torch.set_default_device("cuda")
    opt = ref.Optimizer(ttb.bench_groups(cfg, lr=0.001, wd=0.0, momentum=0.95))

    def attn_sdpa(P, cfg, i, x, ve, cos, sin):
        Bx, Tx, _ = x.shape
        H, Hkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        pre = f"transformer.h.{i}.attn."
        q = (x @ P[pre + "c_q.weight"].t()).view(Bx, Tx, H, hd)
        k = (x @ P[pre + "c_k.weight"].t()).view(Bx, Tx, Hkv, hd)
        v = (x @ P[pre + "c_v.weight"].t()).view(Bx, Tx, Hkv, hd)
        if ve is not None:
            gate = ref.VE_GATE_SCALE * torch.sigmoid(x[..., :ref.VE_GATE_CHANNELS] @ P[pre + "ve_gate.weight"].t())
            v = v + gate.unsqueeze(-1) * ve.view(Bx, Tx, Hkv, hd)
        q, k = ref.apply_rotary(q, cos, sin), ref.apply_rotary(k, cos, sin)
        q, k = ref.rms_norm(q), ref.rms_norm(k)
        if cfg.qk_scale != 1.0:
            q, k = q * cfg.qk_scale, k * cfg.qk_scale
        rep = H // Hkv
        q = q.transpose(1, 2)
        k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
        v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
        w = cfg.window(i)
        if w >= Tx:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ref.attention_mask(Tx, w))
        y = y.transpose(1, 2).reshape(Bx, Tx, H * hd)
        return y @ P[pre + "c_proj.weight"].t()

    ref.attn_forward = attn_sdpa
    # tables and masks made once, on the GPU, outside the compiled region (under dynamo the
    # reference's torch.arange calls would make CPU tensors)
    rot = {}
    orig_rot, orig_mask = ref.rotary_tables, ref.attention_mask
    cos_sin = tuple(t.to("cuda") for t in orig_rot(cfg, T, torch.float32))
    ref.rotary_tables = lambda cfg_, T_, dtype=torch.float32: tuple(t.to(dtype) for t in cos_sin)
    masks = {cfg.window(i): orig_mask(T, cfg.window(i)).to("cuda") for i in range(cfg.n_layer)}
    ref.attention_mask = lambda T_, w: masks[w]
    del rot

    def loss_fn(P, idx, tg):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return ref.forward(P, cfg, idx, tg)[1]

    fwd = torch.compile(loss_fn) if compile_ else loss_fn
    g = torch.Generator(device="cuda").manual_seed(1)
    idx = torch.randint(0, cfg.vocab_size, (B, T), generator=g, device="cuda")
    tg = torch.randint(0, cfg.vocab_size, (B, T), generator=g, device="cuda")
    warm = 2 if compile_ else 1
    times = []
    t_c0 = time.perf_counter()
    if compile_:
        try:
            fwd(P, idx, tg).backward()
        except Exception as e:  # report and fall back to eager, so the run still gives a baseline
            msg = [ln for ln in str(e).splitlines() if ln.strip()]
            print(f"torch train {cfg.name}: torch.compile failed ({type(e).__name__}: {' | '.join(msg[:3])[:400]}); eager instead",
                  flush=True)
            fwd, compile_ = loss_fn, False
        for p in P.values():
            p.grad = None
    for s in range(warm + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fwd(P, idx, tg)
        loss.backward()
        opt.step(P, {n: p.grad for n, p in P.items()})
        for p in P.values():
            p.grad = None
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if s == warm - 1:
            t_warm = time.perf_counter() - t_c0
    timed = sorted(times[warm:])
    med = timed[len(timed) // 2]
    tps = B * T / med
    fpt = ttb.flops_per_token(cfg, T)
    print(f"torch train {cfg.name} {B}x{T} ({'bf16 autocast + torch.compile' if compile_ else 'bf16 autocast, eager'}, SDPA, "
          f"torch {torch.__version__}): step {med:.3f} s median of {steps}, {tps:,.0f} tokens/s, "
          f"{tps * fpt * 1e-12:.1f} TFLOP/s model; warm-up {t_warm:.1f} s; loss {loss.item():.3f}", flush=True)
    torch.set_default_device("cpu")
    ref.rotary_tables, ref.attention_mask = orig_rot, orig_mask


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    for c in a.cases:
        f = c.split(":")
        try:
            if f[0] == "gemm" and len(f) == 7:
                bench_gemm(f[1], int(f[2]), int(f[3]), int(f[4]), f[5] == "1", f[6] == "1", a.reps)
            elif f[0] == "attn" and len(f) == 5:
                bench_attn(*(int(x) for x in f[1:]), a.reps)
            elif f[0] == "train" and len(f) == 4:
                bench_train(f[1], int(f[2]), int(f[3]), a.steps, not a.no_compile)
            else:
                print(f"torch_gpu_bench: bad case '{c}'", file=sys.stderr)
                return 2
        except torch.cuda.OutOfMemoryError as e:
            print(f"torch {c}: out of memory ({str(e).splitlines()[0]})", flush=True)
            torch.set_default_device("cpu")
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
