#!/usr/bin/python3
"""Training-step throughput of the PyTorch reference (tools/nanochat_ref.py) on CPU.

The PyTorch side of bench/train_bench.sh: the same measurement as
`nanochat bench train` (cli/cmd_bench.c), on the same model, so the two can be
compared tokens/s for tokens/s.

One step = forward + cross-entropy loss + backward + the MuonAdamW update, all
fp32, eager (torch 1.13 on CPU: no torch.compile). Model and optimizer math are
nanochat_ref's own functions: `forward`, `Optimizer` (adamw_step, muon_step ->
polar_express). Optimizer settings match what our C bench builds
(nc_optim_defaults): Polar Express 5 steps, NorMuon on (beta2 0.9), cautious
weight decay on, no muon_eq/muon_plus; AdamW betas per nanochat HEAD groups,
eps 1e-10; every group lr 0.001, wd 0, Muon momentum 0.95 (the C bench's
runtime scalars). The cautious mask and the `p *= 1 - lr*wd` multiply are
still computed with wd 0, on both sides.

The step loop is written here (nanochat_ref.loss_and_grads clones every
parameter each call, which the training step does not): parameters are leaf
tensors with requires_grad, their .grad is handed to Optimizer.step and then
dropped.

Tokens and targets: uniform random ids in [0, vocab) from a seeded generator.
Warm-up 1 step, then --steps timed steps; median/min/max step time, tokens/s
at the median, and model GFLOP/s with nanochat's FLOP count (6 x matmul
weights incl. lm_head, not embeddings, + 12 x layers x heads x head_dim x
min(window, T) for attention) -- the count cmd_bench.c uses.

Run with /usr/bin/python3 (Debian's torch 1.13). For a fair 2-core run:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \\
        /usr/bin/python3 tools/torch_train_bench.py --spec models/specs/d4.xml --threads 2
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import nanochat_ref as ref  # noqa: E402


def flops_per_token(cfg: ref.Config, T: int) -> float:
    w = 0.0
    for name, shape in ref.param_shapes(cfg).items():
        if len(shape) == 2 and name != "transformer.wte.weight" and not name.startswith("value_embeds."):
            w += float(shape[0]) * float(shape[1])
    attn = 0.0
    for layer in range(cfg.n_layer):
        attn += 12.0 * cfg.n_head * cfg.head_dim * min(cfg.window(layer), T)
    return 6.0 * w + attn


def muon_flops_per_step(cfg: ref.Config, ns_steps: int = 5) -> float:
    """Matmul FLOPs of Polar Express over every Muon matrix (not in the model
    count above): per iteration A = X^T X (or X X^T), A @ A, X @ B, i.e.
    4 s^2 b + 2 s^3 for an (s x b) or (b x s) matrix, s = min(rows, cols)."""
    f = 0.0
    for name, shape in ref.param_shapes(cfg).items():
        if ref.is_muon_param(name):
            s_, b_ = min(shape), max(shape)
            f += ns_steps * (4.0 * s_ * s_ * b_ + 2.0 * s_ ** 3)
    return f


def bench_groups(cfg: ref.Config, lr: float, wd: float, momentum: float):
    """nanochat HEAD groups (betas, eps) with the C bench's options and scalars."""
    groups = ref.nanochat_groups(cfg, era="head")
    for gr in groups:
        gr["lr"] = lr
        gr["weight_decay"] = wd
        if gr["kind"] == "muon":
            gr["momentum"] = momentum
            gr["options"] = ref.MuonOptions(ortho="polar_express", ns_steps=5, normuon=True, beta2=0.9,
                                            cautious_wd=True, muon_eq=False, muon_plus=False)
    return groups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="model spec, e.g. models/specs/d4.xml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (1 warm-up step first)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--peak", type=float, default=234.0, help="peak GFLOP/s for MFU (bench/train_bench.sh passes the peak nanochat bench measured; default 234)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.set_grad_enabled(True)
    cfg = ref.load_spec(a.spec)
    if a.seq > cfg.sequence_len:
        print(f"torch_train_bench: --seq {a.seq} exceeds the spec's sequence_len {cfg.sequence_len}", file=sys.stderr)
        return 2

    P = ref.init_params(cfg, dtype=torch.float32)
    for t in P.values():
        t.requires_grad_(True)
    opt = ref.Optimizer(bench_groups(cfg, lr=0.001, wd=0.0, momentum=0.95))

    g = torch.Generator().manual_seed(a.seed)
    idx = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g, dtype=torch.int64)
    targets = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g, dtype=torch.int64)

    times, t_fwdbwd, t_opt = [], [], []
    loss_v = float("nan")
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        _, loss = ref.forward(P, cfg, idx, targets)
        loss.backward()
        t1 = time.perf_counter()
        grads = {n: p.grad for n, p in P.items()}
        opt.step(P, grads)
        for p in P.values():
            p.grad = None
        loss_v = loss.item()
        t2 = time.perf_counter()
        times.append(t2 - t0)
        t_fwdbwd.append(t1 - t0)
        t_opt.append(t2 - t1)
        print(f"\rstep {step}/{a.steps}  {times[-1]:.3f} s  loss {loss_v:.4f}   ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    timed = sorted(times[1:])  # times[0] is the warm-up
    n = len(timed)
    fb_med = sorted(t_fwdbwd[1:])[n // 2]
    opt_med = sorted(t_opt[1:])[n // 2]
    med, mn, mx = timed[n // 2], timed[0], timed[-1]  # same median pick as cmd_bench.c
    tokens = a.batch * a.seq
    fpt = flops_per_token(cfg, a.seq)
    tps = tokens / med
    gflops = tps * fpt / 1e9
    threads = torch.get_num_threads()
    print(f"torch train {cfg.name} on cpu ({threads} threads, torch {torch.__version__}, eager fp32): "
          f"batch {a.batch} x seq {a.seq}")
    print(f"step {med:.3f} s median (min {mn:.3f}, max {mx:.3f}) over {a.steps} steps; {tps:.0f} tokens/s; "
          f"{gflops:.1f} GFLOP/s; MFU {100 * gflops / a.peak:.1f}% of {a.peak:.0f} GFLOP/s")
    print(f"  of which forward+backward {fb_med:.3f} s, optimizer {opt_med:.3f} s (medians)")
    print(json.dumps({
        "bench": "train", "impl": "pytorch", "torch": torch.__version__, "spec": cfg.name, "device": "cpu",
        "threads": threads, "batch": a.batch, "seq": a.seq, "steps": a.steps,
        "step_s_median": round(med, 6), "step_s_min": round(mn, 6), "step_s_max": round(mx, 6),
        "fwdbwd_s_median": round(fb_med, 6), "optim_s_median": round(opt_med, 6),
        "tokens_per_s": round(tps, 1), "gflops": round(gflops, 2), "mfu": round(gflops / a.peak, 4),
        "flops_per_token": fpt, "muon_flops_per_step": muon_flops_per_step(cfg), "loss": round(loss_v, 4),
    }, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
