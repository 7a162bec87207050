#!/usr/bin/python3
"""Writes the model/autodiff/optimizer parity fixtures under tests/fixtures/model/<case>/.

    /usr/bin/python3 tools/gen_fixtures.py [--check-only]

Deterministic (fixed seeds, 1 thread, deterministic algorithms). For each case:
    case.json                  every hyperparameter, the spec path, file layout
    weights.safetensors        initial params (nanochat state_dict names)
    io.safetensors             tokens, targets (I32, B x T), logits (B,T,V), loss (scalar)
    grads.safetensors          d loss / d param, same names as weights
    <variant>/step1.safetensors, <variant>/step2.safetensors
                               params after optimizer step k, the optimizer state
                               after step k, and (step2) the gradient it used
See docs/model.md for the model, the formulas and the tensor names.
Also self-checks: float64 finite differences vs autograd, and that 50
AdamW+Muon steps on one batch cut the tiny model's loss by more than 90%.
"""

import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import nanochat_ref as ref  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

B, T = 2, 16
DATA_SEED = 1234
PERTURB_STD = 0.05
STEPS = 2

# Muon variants written per case.
VARIANTS = OrderedDict([
    ("muon", ref.MuonOptions(ortho="polar_express", normuon=False, cautious_wd=False)),
    ("muon_normuon_cautious", ref.MuonOptions(ortho="polar_express", normuon=True, beta2=0.9,
                                              cautious_wd=True)),
    ("muon_head", ref.MuonOptions(ortho="polar_express", normuon=True, beta2=0.9,
                                  cautious_wd=True, muon_eq=True, muon_plus=True)),
    ("muon_newton_schulz", ref.MuonOptions(ortho="newton_schulz")),
])
# muon_head and muon_newton_schulz are left out of the committed set to keep the
# folder near 2 MB (add them here to write them); the same goes for tiny-all's
# plain "muon" variant (wide and tall Muon paths are covered by tiny).
CASES = [
    ("tiny", "models/specs/tiny.xml", ["muon", "muon_normuon_cautious"]),
    ("tiny-all", "models/specs/tiny-all.xml", ["muon_normuon_cautious"]),
]
MUON_LR, MUON_MOMENTUM, MUON_WD = 0.02, 0.95, 0.2
FALLBACK_ADAMW_WD = 0.01  # used where nanochat's group wd is 0, so decay is exercised everywhere


def fixture_groups(cfg, opts):
    """nanochat HEAD groups (lr with dmodel scale, batch_scale 1, betas, eps) with
    every weight decay non-zero and the Muon variant's options."""
    groups = ref.nanochat_groups(cfg, era="head", batch_scale=1.0, muon_weight_decay=MUON_WD)
    for g in groups:
        if g["kind"] == "adamw":
            if g["weight_decay"] == 0.0:
                g["weight_decay"] = FALLBACK_ADAMW_WD
        else:
            g["lr"], g["momentum"], g["options"] = MUON_LR, MUON_MOMENTUM, opts
    return groups


def make_batch(cfg):
    g = torch.Generator().manual_seed(DATA_SEED)
    tokens = torch.randint(0, cfg.vocab_size, (B, T), generator=g, dtype=torch.int64)
    # targets: next token of a longer random stream, with some positions ignored
    nxt = torch.randint(0, cfg.vocab_size, (B, 1), generator=g, dtype=torch.int64)
    targets = torch.cat([tokens[:, 1:], nxt], dim=1)
    targets[0, :3] = -1
    targets[1, 10] = -1
    targets[1, -2:] = -1
    return tokens.to(torch.int32), targets.to(torch.int32)


def make_weights(cfg):
    P = ref.init_params(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    perturbed = []
    for n, t in P.items():
        if torch.all(t == 0):
            t.add_(torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * PERTURB_STD)
            perturbed.append(n)
    return P, perturbed


def clone(P):
    return OrderedDict((k, v.detach().clone()) for k, v in P.items())


def fd_check(cfg, P, tokens, targets, n_entries=3, eps=1e-5):
    """Central differences in float64 on a few entries of several params."""
    P64 = OrderedDict((k, v.double()) for k, v in P.items())
    _, _, G64 = ref.loss_and_grads(P64, cfg, tokens, targets)
    _, _, G32 = ref.loss_and_grads(P, cfg, tokens, targets)
    g = torch.Generator().manual_seed(7)
    names = [n for n in P if not n.startswith("transformer.h.") or ".0." in n or
             n.startswith(f"transformer.h.{cfg.n_layer - 1}.")]
    used = sorted(set(tokens.flatten().tolist()))
    worst, worst32 = 0.0, 0.0
    for n in names:
        t = P64[n]
        for _ in range(n_entries):
            if n in ("transformer.wte.weight",) or n.startswith("value_embeds."):
                r = used[int(torch.randint(len(used), (1,), generator=g))]
                c = int(torch.randint(t.shape[1], (1,), generator=g))
                ix = (r, c)
            else:
                ix = tuple(int(torch.randint(s, (1,), generator=g)) for s in t.shape)
            orig = t[ix].item()
            t[ix] = orig + eps
            lp = ref.forward(P64, cfg, tokens, targets)[1].item()
            t[ix] = orig - eps
            lm = ref.forward(P64, cfg, tokens, targets)[1].item()
            t[ix] = orig
            fd = (lp - lm) / (2 * eps)
            an = G64[n][ix].item()
            err = abs(fd - an) / max(1e-3, abs(fd) + abs(an))
            worst = max(worst, err)
        e32 = ((G32[n].double() - G64[n]).abs().max() / G64[n].abs().max().clamp_min(1e-12)).item()
        worst32 = max(worst32, e32)
    return worst, worst32


def train_check(cfg, P, tokens, targets, opts, steps=50):
    P = clone(P)
    opt = ref.Optimizer(fixture_groups(cfg, opts))
    losses = []
    for _ in range(steps):
        _, loss, G = ref.loss_and_grads(P, cfg, tokens, targets)
        losses.append(loss.item())
        opt.step(P, G)
    losses.append(ref.forward(P, cfg, tokens, targets)[1].item())
    return losses


def group_json(groups):
    out = []
    for g in groups:
        d = dict(kind=g["kind"], name=g["name"], params=g["params"], lr=g["lr"],
                 weight_decay=g["weight_decay"])
        if g["kind"] == "adamw":
            d.update(betas=list(g["betas"]), eps=g["eps"])
        else:
            d.update(momentum=g["momentum"],
                     lr_scale="lr * sqrt(max(1, rows/cols))")
        out.append(d)
    return out


def write_case(name, spec_rel, variants, outroot, write=True):
    cfg = ref.load_spec(os.path.join(ROOT, spec_rel))
    P, perturbed = make_weights(cfg)
    tokens, targets = make_batch(cfg)
    logits, loss, G = ref.loss_and_grads(P, cfg, tokens, targets)
    d = os.path.join(outroot, name)
    sizes = 0
    if write:
        os.makedirs(d, exist_ok=True)
        sizes += ref.save_safetensors(os.path.join(d, "weights.safetensors"), P)
        sizes += ref.save_safetensors(os.path.join(d, "grads.safetensors"), G)
        sizes += ref.save_safetensors(os.path.join(d, "io.safetensors"), OrderedDict(
            tokens=tokens, targets=targets, logits=logits, loss=loss.reshape(())))
    step_losses = {}
    for v in variants:
        opts = VARIANTS[v]
        groups = fixture_groups(cfg, opts)
        opt = ref.Optimizer(groups)
        Pv = clone(P)
        Gk, lk = G, loss
        step_losses[v] = []
        for k in range(1, STEPS + 1):
            if k > 1:
                _, lk, Gk = ref.loss_and_grads(Pv, cfg, tokens, targets)
            step_losses[v].append(lk.item())
            opt.step(Pv, Gk)
            out = OrderedDict(Pv)
            out["loss_before"] = lk.reshape(())
            if k == 1:
                out.update(opt.state_tensors())
            else:  # the gradient this step used; state after the last step is not stored
                for n, t in Gk.items():
                    out["grad." + n] = t
            if write:
                os.makedirs(os.path.join(d, v), exist_ok=True)
                sizes += ref.save_safetensors(os.path.join(d, v, f"step{k}.safetensors"), out)
        step_losses[v].append(ref.forward(Pv, cfg, tokens, targets)[1].item())
    groups0 = fixture_groups(cfg, VARIANTS[variants[0]])
    meta = OrderedDict(
        case=name,
        spec=spec_rel,
        config=OrderedDict(
            n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head,
            head_dim=cfg.head_dim, vocab_size=cfg.vocab_size, sequence_len=cfg.sequence_len,
            rope_base=cfg.rope_base, window_pattern=cfg.window_pattern,
            windows=[cfg.window(i) for i in range(cfg.n_layer)],
            window_semantics="query at p sees keys j with p - window < j <= p",
            qk_scale=cfg.qk_scale, softcap=cfg.softcap,
            value_embeds=cfg.value_embeds, ve_layers=[i for i in range(cfg.n_layer) if cfg.has_ve(i)],
            resid_lambdas=cfg.resid_lambdas, smear=cfg.smear, backout=cfg.backout,
            backout_layer=cfg.n_layer // 2 if cfg.backout else None,
            rms_eps=ref.RMS_EPS, smear_channels=ref.SMEAR_CHANNELS,
            ve_gate_channels=ref.VE_GATE_CHANNELS, ve_gate_scale=ref.VE_GATE_SCALE),
        init=OrderedDict(scheme=cfg.init, seed=cfg.seed, perturbed=perturbed,
                         perturb="param += N(0, %g) for every param that init leaves all-zero; "
                                 "generator seed = seed + 1" % PERTURB_STD),
        batch=OrderedDict(B=B, T=T, data_seed=DATA_SEED, ignore_index=-1,
                          n_targets=int((targets != -1).sum())),
        loss=loss.item(),
        params=OrderedDict((n, list(t.shape)) for n, t in P.items()),
        optimizer=OrderedDict(
            steps=STEPS,
            step_semantics="step k: grads at the params after step k-1 on the same batch "
                           "(step 1 uses grads.safetensors); AdamW step counter t = k",
            adamw_groups=[g for g in group_json(groups0) if g["kind"] == "adamw"],
            muon=OrderedDict(params=[g for g in groups0 if g["kind"] == "muon"][0]["params"],
                             lr=MUON_LR, momentum=MUON_MOMENTUM, weight_decay=MUON_WD,
                             lr_scale="lr_eff = lr * sqrt(max(1, rows/cols))", nesterov=True),
            variants=OrderedDict((v, OrderedDict(
                ortho=VARIANTS[v].ortho, ns_steps=VARIANTS[v].ns_steps,
                normuon=VARIANTS[v].normuon,
                beta2=VARIANTS[v].beta2 if VARIANTS[v].normuon else None,
                cautious_wd=VARIANTS[v].cautious_wd, muon_eq=VARIANTS[v].muon_eq,
                muon_plus=VARIANTS[v].muon_plus,
                losses_before_step=step_losses[v][:-1], loss_after_last_step=step_losses[v][-1]))
                for v in variants),
        ),
        files=OrderedDict([
            ("weights.safetensors", "initial params, nanochat names, F32"),
            ("io.safetensors", "tokens I32 (B,T); targets I32 (B,T), -1 = ignored; "
                               "logits F32 (B,T,V) after softcap; loss F32 () mean CE"),
            ("grads.safetensors", "d loss / d param at weights, same names"),
            ("<variant>/step<k>.safetensors",
             "<param> after step k; loss_before () = loss at the params the step started from; "
             "step1 also the optimizer state after step 1: adamw.exp_avg.<p>, adamw.exp_avg_sq.<p> "
             "(AdamW params), muon.momentum.<p> (Muon params), muon.second_momentum.<p> (NorMuon "
             "variants; (rows,1) if rows>=cols else (1,cols)); step2 also grad.<p> = the gradient "
             "step 2 used (computed at the step-1 params)"),
        ]),
        regenerate="/usr/bin/python3 tools/gen_fixtures.py",
    )
    if write:
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
    return cfg, P, tokens, targets, loss.item(), step_losses, sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-only", action="store_true", help="run the self-checks, write nothing")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "model"))
    args = ap.parse_args()
    ok = True
    total = 0
    for name, spec, variants in CASES:
        cfg, P, tokens, targets, loss, step_losses, size = write_case(
            name, spec, variants, args.out, write=not args.check_only)
        total += size
        nparams = sum(t.numel() for t in P.values())
        print(f"[{name}] {spec}: C={cfg.n_embd} L={cfg.n_layer} H={cfg.n_head} Hkv={cfg.n_kv_head} "
              f"windows={[cfg.window(i) for i in range(cfg.n_layer)]} params={nparams} "
              f"loss={loss:.6f} files={size / 1024:.1f} KiB")
        for v, ls in step_losses.items():
            print(f"  {v:24s} loss before steps {', '.join('%.6f' % x for x in ls[:-1])}; after {ls[-1]:.6f}")
        fd, e32 = fd_check(cfg, P, tokens, targets)
        good = fd < 1e-6 and e32 < 1e-4
        ok &= good
        print(f"  finite differences (fp64, central, h=1e-5): worst rel err {fd:.2e}; "
              f"fp32 vs fp64 grads: worst rel err {e32:.2e} {'OK' if good else 'FAIL'}")
        for v in ("muon_normuon_cautious",):
            losses = train_check(cfg, P, tokens, targets, VARIANTS[v])
            drop = 1 - losses[-1] / losses[0]
            good = drop > 0.9 if name == "tiny" else True
            ok &= good
            print(f"  50 AdamW+Muon({v}) steps on one batch: loss {losses[0]:.4f} -> {losses[-1]:.4f} "
                  f"({100 * drop:.1f}% drop) {'OK' if good else 'FAIL (want > 90%)'}")
    if not args.check_only:
        print(f"total fixture bytes: {total} ({total / 1024 / 1024:.2f} MiB) under {args.out}")
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
