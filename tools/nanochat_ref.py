#!/usr/bin/python3
"""PyTorch reference of the nanochat GPT and its optimizers, as nanochat-c builds them.

This is the parity oracle for the C model, autodiff and optimizers. It is a
from-scratch re-implementation of the math in karpathy/nanochat
(`nanochat/gpt.py`, `nanochat/optim.py`, `nanochat/muon.py`, `nanochat/adamw.py`)
written as plain functions on a dict of tensors keyed by nanochat's state_dict
names. Everything runs in the dtype of the parameters (fp32 for fixtures, fp64
for the finite-difference check). docs/model.md is the prose version.

Where nanochat uses bf16 and we do not (we are fp32 everywhere):
  * COMPUTE_DTYPE activations (bf16 on SM>=80 GPUs): matmuls, norms, attention.
  * wte / value_embeds tables stored in COMPUTE_DTYPE.
  * rotary cos/sin tables stored in bf16 (Oct 2025) / COMPUTE_DTYPE (HEAD).
  * Muon's orthogonalization runs in bf16 (X = g.bfloat16()).
  * FlashAttention-3 bf16 kernels; FP8 matmuls behind --fp8.
Logits, softcap and the loss are fp32 in nanochat too.

Vocab padding: nanochat pads vocab_size up to a multiple of 64 for wte,
lm_head and value_embeds and crops the logits. Every spec we use already has a
vocab that is a multiple of 64, so there is no padding here; load_spec
refuses other vocab sizes rather than silently diverging.

Run with Debian's python: /usr/bin/python3 (torch 1.13, which lacks
F.rms_norm; rms_norm below is the same formula).
"""

import math
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

# F.rms_norm(x, (C,)) with eps=None uses torch.finfo(x.dtype).eps. We pin the
# fp32 value so the fp64 finite-difference check evaluates the same function.
RMS_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920928955078125e-07

SMEAR_CHANNELS = 24    # smear_gate reads x[..., :24]       (HEAD)
VE_GATE_CHANNELS = 12  # ve_gate reads x[..., :12]          (HEAD; was 32 earlier)
VE_GATE_SCALE = 3.0    # gate = 3 * sigmoid(...), range (0,3) (HEAD; was 2 earlier)

# Polar Express coefficients (Amsel et al. 2025, arXiv 2505.16932), computed for
# num_iters=5, safety_factor=2e-2, cushion=2 -- the table nanochat HEAD uses.
POLAR_EXPRESS_COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]
# The original Muon quintic Newton-Schulz coefficients (nanochat Oct 2025).
NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)


# ----------------------------------------------------------------------------
# Spec


def _on(v: Optional[str]) -> bool:
    if v is None:
        return False
    v = v.strip().lower()
    if v in ("on", "true", "1", "yes"):
        return True
    if v in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"feature switch must be on/off, got {v!r}")


def nanochat_short_window(sequence_len: int) -> int:
    """nanochat's S-window rule: ceil(seq//4 up to a multiple of 128)."""
    return -(-(sequence_len // 4) // 128) * 128


@dataclass
class Config:
    name: str
    n_layer: int
    aspect_ratio: int
    head_dim: int
    n_head: int
    n_kv_head: int
    n_embd: int
    vocab_size: int
    sequence_len: int
    rope_base: float
    window_pattern: str
    short_window: int       # tokens seen by an S layer, self included
    qk_scale: float         # 1.0 = off
    softcap: float          # 0 = off
    value_embeds: bool = False
    resid_lambdas: bool = False  # covers resid_lambdas AND x0_lambdas
    smear: bool = False
    backout: bool = False
    init: str = "2025-10"   # "2025-10" or "head"
    seed: int = 42
    spec_path: str = ""

    @property
    def any_feature(self) -> bool:
        return self.value_embeds or self.resid_lambdas or self.smear or self.backout

    def window(self, layer: int) -> int:
        """Tokens a query at position p sees: keys j with p - W < j <= p.

        Pattern tiled over layers, last layer forced L. L = sequence_len (i.e.
        plain causal for any T <= sequence_len)."""
        if layer == self.n_layer - 1:
            return self.sequence_len
        c = self.window_pattern[layer % len(self.window_pattern)]
        return self.sequence_len if c == "L" else self.short_window

    def has_ve(self, layer: int) -> bool:
        """nanochat: alternating layers, last layer always included."""
        return self.value_embeds and (layer % 2 == (self.n_layer - 1) % 2)


def load_spec(path: str) -> Config:
    root = ET.parse(path).getroot()
    if root.tag != "model":
        raise ValueError(f"{path}: root element must be <model>")
    d = root.find("dims")
    at = root.find("attention")
    out = root.find("output")
    feat = root.find("features")
    init = root.find("init")
    depth = int(d.get("depth"))
    aspect = int(d.get("aspect_ratio"))
    head_dim = int(d.get("head_dim"))
    # model_dim = depth * aspect_ratio rounded UP to a multiple of head_dim
    model_dim = -(-(depth * aspect) // head_dim) * head_dim
    n_head = model_dim // head_dim
    n_kv_head = int(d.get("n_kv_head", n_head))
    assert n_head % n_kv_head == 0, "n_head must be a multiple of n_kv_head"
    vocab = int(d.get("vocab_size"))
    if vocab % 64 != 0:
        raise ValueError("vocab_size must be a multiple of 64 (nanochat pads to 64; we do not pad)")
    seq = int(d.get("sequence_len"))
    pattern = (at.get("window_pattern", "L") if at is not None else "L").upper()
    assert pattern and all(c in "SL" for c in pattern)
    sw = at.get("short_window") if at is not None else None
    # An explicit short_window counts tokens seen (self included). nanochat's
    # FA3 window (w, 0) lets a query see w+1 keys (p-w..p), so its default rule
    # w = ceil(seq//4 -> x128) is w+1 tokens seen here.
    short_window = int(sw) if sw is not None else nanochat_short_window(seq) + 1
    feats = {}
    for k in ("value_embeds", "resid_lambdas", "smear", "backout"):
        feats[k] = _on(feat.get(k)) if feat is not None else False
    cfg = Config(
        name=root.get("name", ""), n_layer=depth, aspect_ratio=aspect, head_dim=head_dim,
        n_head=n_head, n_kv_head=n_kv_head, n_embd=model_dim, vocab_size=vocab,
        sequence_len=seq,
        rope_base=float(at.get("rope_base", "10000")) if at is not None else 10000.0,
        window_pattern=pattern, short_window=short_window,
        qk_scale=float(at.get("qk_scale", "1")) if at is not None else 1.0,
        softcap=float(out.get("softcap", "0")) if out is not None else 0.0,
        spec_path=path, **feats)
    cfg.init = "head" if cfg.any_feature else "2025-10"
    if init is not None:
        scheme = init.get("scheme") or init.get("name") or init.get("type")
        if scheme:
            assert scheme in ("2025-10", "head"), scheme
            cfg.init = scheme
        if init.get("seed") is not None:
            cfg.seed = int(init.get("seed"))
    return cfg


# ----------------------------------------------------------------------------
# Parameters (names and shapes as nanochat's state_dict; Linear weights are (out, in))


def param_shapes(cfg: Config) -> "OrderedDict[str, tuple]":
    C, V, hd = cfg.n_embd, cfg.vocab_size, cfg.head_dim
    kv = cfg.n_kv_head * hd
    s = OrderedDict()
    s["transformer.wte.weight"] = (V, C)
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        s[p + "attn.c_q.weight"] = (cfg.n_head * hd, C)
        s[p + "attn.c_k.weight"] = (kv, C)
        s[p + "attn.c_v.weight"] = (kv, C)
        s[p + "attn.c_proj.weight"] = (C, C)
        if cfg.has_ve(i):
            s[p + "attn.ve_gate.weight"] = (cfg.n_kv_head, VE_GATE_CHANNELS)
        s[p + "mlp.c_fc.weight"] = (4 * C, C)
        s[p + "mlp.c_proj.weight"] = (C, 4 * C)
    s["lm_head.weight"] = (V, C)
    if cfg.resid_lambdas:
        s["resid_lambdas"] = (cfg.n_layer,)
        s["x0_lambdas"] = (cfg.n_layer,)
    if cfg.smear:
        s["smear_gate.weight"] = (1, SMEAR_CHANNELS)
        s["smear_lambda"] = (1,)
    if cfg.backout:
        s["backout_lambda"] = (1,)
    for i in range(cfg.n_layer):
        if cfg.has_ve(i):
            s[f"value_embeds.{i}.weight"] = (V, kv)
    return s


def init_params(cfg: Config, seed: Optional[int] = None, scheme: Optional[str] = None,
                dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """nanochat's init, drawn in param_shapes order from one seeded CPU generator.

    "2025-10" (nanochat @3a5e0bc, GPT._init_weights):
        Linear (out,in): N(0, std), std = 1/sqrt(in) * min(1, sqrt(out/in))
        wte: N(0, 1); lm_head = 0; attn.c_proj = mlp.c_proj = 0.
    "head" (nanochat HEAD, GPT.init_weights), s = sqrt(3)/sqrt(C):
        wte N(0, 0.8); lm_head N(0, 0.001); c_q, c_k, c_v U(-s, s);
        c_fc U(-0.4 s, 0.4 s); attn.c_proj = mlp.c_proj = 0; value_embeds U(-s, s);
        ve_gate U(0, 0.02); smear_gate U(0, 0.02); smear_lambda 0; backout_lambda 0.2;
        resid_lambdas[i] = 1.15 - 0.10 i/max(L-1,1); x0_lambdas[i] = 0.20 - 0.15 i/max(L-1,1).
    The draws are not bit-identical to nanochat's (different RNG order); the
    distributions are.
    """
    scheme = scheme or cfg.init
    g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    C, L = cfg.n_embd, cfg.n_layer
    out = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        t = torch.empty(shape, dtype=torch.float64)
        if scheme == "2025-10":
            if name == "transformer.wte.weight" or name.startswith("value_embeds."):
                t.normal_(0.0, 1.0, generator=g)
            elif name == "lm_head.weight" or name.endswith("c_proj.weight"):
                t.zero_()
            elif name.endswith(".weight"):  # any other Linear
                fan_out, fan_in = shape
                t.normal_(0.0, 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in)), generator=g)
            else:
                t.zero_()
        elif scheme == "head":
            s = math.sqrt(3.0) / math.sqrt(C)
            if name == "transformer.wte.weight":
                t.normal_(0.0, 0.8, generator=g)
            elif name == "lm_head.weight":
                t.normal_(0.0, 0.001, generator=g)
            elif name.endswith(("c_q.weight", "c_k.weight", "c_v.weight")) or name.startswith("value_embeds."):
                t.uniform_(-s, s, generator=g)
            elif name.endswith("c_fc.weight"):
                t.uniform_(-0.4 * s, 0.4 * s, generator=g)
            elif name.endswith("c_proj.weight"):
                t.zero_()
            elif name.endswith("ve_gate.weight") or name == "smear_gate.weight":
                t.uniform_(0.0, 0.02, generator=g)
            elif name == "resid_lambdas":
                t.copy_(torch.tensor([1.15 - 0.10 * i / max(L - 1, 1) for i in range(L)]))
            elif name == "x0_lambdas":
                t.copy_(torch.tensor([0.20 - 0.15 * i / max(L - 1, 1) for i in range(L)]))
            elif name == "smear_lambda":
                t.zero_()
            elif name == "backout_lambda":
                t.fill_(0.2)
            else:
                raise AssertionError(name)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        out[name] = t.to(dtype)
    return out


# ----------------------------------------------------------------------------
# Forward


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """y = x / sqrt(mean(x^2 over last dim) + eps), no weight."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)


def rotary_tables(cfg: Config, T: int, dtype=torch.float32):
    """cos, sin of shape (T, head_dim/2): angle[t, j] = t * base^(-2j/head_dim).

    Computed in fp32 as nanochat does (then kept fp32 instead of bf16)."""
    j2 = torch.arange(0, cfg.head_dim, 2, dtype=torch.float32)
    inv_freq = 1.0 / (cfg.rope_base ** (j2 / cfg.head_dim))
    t = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split pairing: dim k pairs with k + hd/2. x: (B, T, H, hd).

    y1 = x1 cos + x2 sin ; y2 = -x1 sin + x2 cos  (rotation by -angle)."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c + x2 * s, -x1 * s + x2 * c], dim=-1)


def attention_mask(T: int, window: int) -> torch.Tensor:
    """True where query p may see key j: 0 <= p - j < window."""
    p = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= p) & (p - j < window)


def attn_forward(P, cfg: Config, i: int, x: torch.Tensor, ve: Optional[torch.Tensor], cos, sin):
    B, T, C = x.shape
    H, Hkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    pre = f"transformer.h.{i}.attn."
    q = (x @ P[pre + "c_q.weight"].t()).view(B, T, H, hd)
    k = (x @ P[pre + "c_k.weight"].t()).view(B, T, Hkv, hd)
    v = (x @ P[pre + "c_v.weight"].t()).view(B, T, Hkv, hd)
    if ve is not None:
        # value residual: v += 3 * sigmoid(ve_gate(x[..., :12])) * ve, gate per kv head;
        # x is the (normed) attention input.
        gate = VE_GATE_SCALE * torch.sigmoid(x[..., :VE_GATE_CHANNELS] @ P[pre + "ve_gate.weight"].t())
        v = v + gate.unsqueeze(-1) * ve.view(B, T, Hkv, hd)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    q, k = rms_norm(q), rms_norm(k)  # QK norm, per head over hd
    if cfg.qk_scale != 1.0:
        q, k = q * cfg.qk_scale, k * cfg.qk_scale
    # GQA: query head h uses kv head h // (H / Hkv)
    rep = H // Hkv
    q = q.transpose(1, 2)                                   # (B, H, T, hd)
    k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
    mask = attention_mask(T, cfg.window(i))
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
    return y @ P[pre + "c_proj.weight"].t()


def mlp_forward(P, i: int, x: torch.Tensor) -> torch.Tensor:
    pre = f"transformer.h.{i}.mlp."
    h = torch.relu(x @ P[pre + "c_fc.weight"].t()).square()
    return h @ P[pre + "c_proj.weight"].t()


def forward(P: Dict[str, torch.Tensor], cfg: Config, idx: torch.Tensor,
            targets: Optional[torch.Tensor] = None, return_trace: bool = False):
    """Returns (logits (B,T,V) after softcap, mean CE loss or None[, trace])."""
    B, T = idx.shape
    idx = idx.long()
    cos, sin = rotary_tables(cfg, T, P["transformer.wte.weight"].dtype)
    trace = OrderedDict()
    x = P["transformer.wte.weight"][idx]
    x = rms_norm(x)
    if cfg.smear and T > 1:
        # x[t] += smear_lambda * sigmoid(smear_gate(x[t][:24])) * x[t-1], t >= 1 (x pre-smear)
        gate = P["smear_lambda"] * torch.sigmoid(x[:, 1:, :SMEAR_CHANNELS] @ P["smear_gate.weight"].t())
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
    trace["x_embed"] = x
    x0 = x
    backout_layer = cfg.n_layer // 2
    x_backout = None
    for i in range(cfg.n_layer):
        if cfg.resid_lambdas:
            x = P["resid_lambdas"][i] * x + P["x0_lambdas"][i] * x0
        ve = P[f"value_embeds.{i}.weight"][idx] if cfg.has_ve(i) else None
        x = x + attn_forward(P, cfg, i, rms_norm(x), ve, cos, sin)
        x = x + mlp_forward(P, i, rms_norm(x))
        trace[f"x_block{i}"] = x
        if cfg.backout and i == backout_layer:
            x_backout = x
    if x_backout is not None:
        x = x - P["backout_lambda"] * x_backout
    x = rms_norm(x)
    logits = x @ P["lm_head.weight"].t()
    if cfg.softcap:
        logits = cfg.softcap * torch.tanh(logits / cfg.softcap)
    loss = None
    if targets is not None:
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-1)
    if return_trace:
        return logits, loss, trace
    return logits, loss


def loss_and_grads(P, cfg, idx, targets):
    Q = OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in P.items())
    logits, loss = forward(Q, cfg, idx, targets)
    loss.backward()
    return logits.detach(), loss.detach(), OrderedDict((k, v.grad.detach().clone()) for k, v in Q.items())


# ----------------------------------------------------------------------------
# Optimizers


def adamw_step(p: torch.Tensor, g: torch.Tensor, state: dict, lr: float, beta1: float,
               beta2: float, eps: float, weight_decay: float) -> None:
    """nanochat adamw_step_fused, in place. state: step (int), exp_avg, exp_avg_sq.

        t   = t + 1
        p   = p * (1 - lr*wd)                    decoupled weight decay, first
        m   = m + (1-b1) (g - m)                 m.lerp_(g, 1-b1)
        v   = v + (1-b2) (g^2 - v)               v.lerp_(g^2, 1-b2)
        p   = p - (lr / (1 - b1^t)) * m / (sqrt(v / (1 - b2^t)) + eps)
    """
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    state["step"] += 1
    t = state["step"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    p.mul_(1 - lr * weight_decay)
    m.lerp_(g, 1 - beta1)
    v.lerp_(g.square(), 1 - beta2)
    bias1 = 1 - beta1 ** t
    bias2 = 1 - beta2 ** t
    denom = (v / bias2).sqrt() + eps
    p.add_(m / denom, alpha=-lr / bias1)


def polar_express(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """X = G / (||G||_F * 1.01 + 1e-6); then for (a,b,c) in the table:
    tall (rows > cols): A = X^T X, B = bA + cA^2, X = aX + X B
    wide (rows <= cols): A = X X^T, B = bA + cA^2, X = aX + B X."""
    X = G / (G.norm() * 1.01 + 1e-6)
    tall = G.size(-2) > G.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        if tall:
            A = X.mT @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.mT
            X = a * X + (b * A + c * (A @ A)) @ X
    return X


def newton_schulz5(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Original Muon (nanochat Oct 2025): transpose if tall, X = G / (||G||_F + 1e-7),
    then `steps` times A = X X^T, B = bA + cA^2, X = aX + B X with
    (a,b,c) = (3.4445, -4.7750, 2.0315); transpose back."""
    a, b, c = NEWTON_SCHULZ_COEFFS
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.mT if tall else X


@dataclass
class MuonOptions:
    ortho: str = "polar_express"   # "polar_express" | "newton_schulz"
    ns_steps: int = 5
    normuon: bool = False          # factored second moment variance reduction (HEAD)
    beta2: float = 0.9             # NorMuon second-moment EMA
    cautious_wd: bool = False      # HEAD: decay only where update and param agree in sign
    muon_eq: bool = False          # HEAD: row equilibration before orthogonalization
    muon_plus: bool = False        # HEAD: snap ||.||_F to sqrt(min(m,n)) after it


def muon_step(p: torch.Tensor, g: torch.Tensor, state: dict, lr: float, momentum: float,
              weight_decay: float, opt: MuonOptions) -> None:
    """One Muon step on a 2-D matrix, in place. state: momentum_buffer, second_momentum_buffer.

    HEAD's muon_step_fused, step by step (every norm is per matrix):
      1. Nesterov: buf = lerp(buf, g, 1-mu); u = lerp(g, buf, mu)
      2. [muon_eq] u_r *= (||u||_F / sqrt(rows)) / max(||u_r||, 1e-6) for each row r
      3. orthogonalize: polar_express(u) (or newton_schulz5(u))
      4. [muon_plus] u *= sqrt(min(rows, cols)) / max(||u||_F, 1e-6)
      5. [normuon] red = cols if rows >= cols else rows (reduce over the last dim
         when rows >= cols, i.e. one statistic per row; else one per column):
            v      = mean(u^2 over red)           (rows,1) or (1,cols)
            vnorm  = sqrt(sum(v) * |red|)         (= ||u||_F)
            s2     = lerp(s2, v, 1-beta2)         second_momentum_buffer
            step   = rsqrt(max(s2, 1e-10))
            vnew   = sqrt(sum(v * |red| * step^2))
            u     *= step * vnorm / max(vnew, 1e-10)
      6. lr_eff = lr * sqrt(max(1, rows/cols))
         cautious:  p -= lr_eff*u + lr_eff*wd*p*[u*p >= 0]
         otherwise: p -= lr_eff*u + lr_eff*wd*p     (plain decoupled decay)
    """
    assert p.ndim == 2
    rows, cols = p.shape
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(p)
        if opt.normuon:
            sshape = (rows, 1) if rows >= cols else (1, cols)
            state["second_momentum_buffer"] = torch.zeros(sshape, dtype=p.dtype)
    buf = state["momentum_buffer"]
    buf.lerp_(g, 1 - momentum)
    u = g.lerp(buf, momentum)
    if opt.muon_eq:
        target = u.norm() / math.sqrt(rows)
        row_norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        u = u * (target / row_norm)
    if opt.ortho == "polar_express":
        u = polar_express(u, opt.ns_steps)
    elif opt.ortho == "newton_schulz":
        u = newton_schulz5(u, opt.ns_steps)
    else:
        raise ValueError(opt.ortho)
    if opt.muon_plus:
        u = u * (math.sqrt(min(rows, cols)) / u.norm().clamp_min(1e-6))
    if opt.normuon:
        red_dim = -1 if rows >= cols else -2
        n_red = u.size(red_dim)
        v_mean = u.square().mean(dim=red_dim, keepdim=True)
        v_norm = (v_mean.sum() * n_red).sqrt()
        s2 = state["second_momentum_buffer"]
        s2.lerp_(v_mean, 1 - opt.beta2)
        step = s2.clamp_min(1e-10).rsqrt()
        v_norm_new = (v_mean * n_red * step.square()).sum().sqrt()
        u = u * (step * (v_norm / v_norm_new.clamp_min(1e-10)))
    lr_eff = lr * math.sqrt(max(1.0, rows / cols))
    if opt.cautious_wd:
        mask = ((u * p) >= 0).to(p.dtype)
        p.sub_(lr_eff * u + lr_eff * weight_decay * p * mask)
    else:
        p.sub_(lr_eff * u + lr_eff * weight_decay * p)


# ----------------------------------------------------------------------------
# Param groups (nanochat GPT.setup_optimizer)


def is_muon_param(name: str) -> bool:
    """Muon gets every parameter under transformer.h (all 2-D: c_q, c_k, c_v,
    c_proj, c_fc, mlp.c_proj, ve_gate). Everything else is AdamW."""
    return name.startswith("transformer.h.")


def nanochat_groups(cfg: Config, era: str = "head", batch_scale: float = 1.0,
                    muon_weight_decay: float = 0.0) -> List[dict]:
    """nanochat's optimizer groups and defaults.

    HEAD (setup_optimizer(unembedding_lr=0.008, embedding_lr=0.3, matrix_lr=0.02,
    scalar_lr=0.5); base_train multiplies every lr by batch_scale = sqrt(B/2^19)),
    dmodel = (C/768)^-0.5, eps 1e-10:
        lm_head        lr 0.008*dmodel      betas (0.8, 0.96)   wd 0.01
        wte            lr 0.3*dmodel        betas (0.8, 0.995)  wd 0.001
        value_embeds   lr 0.3*dmodel*0.5    betas (0.8, 0.995)  wd 0.01
        resid_lambdas  lr 0.5*0.01          betas (0.8, 0.95)   wd 0.05
        x0_lambdas     lr 0.5               betas (0.96, 0.95)  wd 0
        smear_gate.weight, smear_lambda, backout_lambda
                       lr 0.2               betas (0.8, 0.95)   wd 0
        muon           lr 0.02, momentum 0.95, ns 5, beta2 0.9, wd = muon_weight_decay
    2025-10: AdamW betas (0.8, 0.95), eps 1e-10, wd 0; lm_head lr 0.004*dmodel,
        wte 0.2*dmodel; Muon lr 0.02, momentum 0.95, Newton-Schulz, no wd.
    """
    names = list(param_shapes(cfg).keys())
    dmodel = (cfg.n_embd / 768) ** -0.5
    bs = batch_scale
    groups = []

    def adam(gname, members, lr, betas, wd):
        members = [n for n in members if n in names]
        if members:
            groups.append(dict(kind="adamw", name=gname, params=members, lr=lr * bs,
                               betas=betas, eps=1e-10, weight_decay=wd))

    if era == "head":
        adam("lm_head", ["lm_head.weight"], 0.008 * dmodel, (0.8, 0.96), 0.01)
        adam("wte", ["transformer.wte.weight"], 0.3 * dmodel, (0.8, 0.995), 0.001)
        adam("value_embeds", [n for n in names if n.startswith("value_embeds.")],
             0.3 * dmodel * 0.5, (0.8, 0.995), 0.01)
        adam("resid_lambdas", ["resid_lambdas"], 0.5 * 0.01, (0.8, 0.95), 0.05)
        adam("x0_lambdas", ["x0_lambdas"], 0.5, (0.96, 0.95), 0.0)
        adam("scalars", ["smear_gate.weight", "smear_lambda", "backout_lambda"], 0.2, (0.8, 0.95), 0.0)
        groups.append(dict(kind="muon", name="muon", params=[n for n in names if is_muon_param(n)],
                           lr=0.02 * bs, momentum=0.95, weight_decay=muon_weight_decay,
                           options=MuonOptions(ortho="polar_express", normuon=True, beta2=0.9,
                                               cautious_wd=True, muon_eq=True, muon_plus=True)))
    elif era == "2025-10":
        adam("lm_head", ["lm_head.weight"], 0.004 * dmodel, (0.8, 0.95), 0.0)
        adam("wte", ["transformer.wte.weight"], 0.2 * dmodel, (0.8, 0.95), 0.0)
        groups.append(dict(kind="muon", name="muon", params=[n for n in names if is_muon_param(n)],
                           lr=0.02 * bs, momentum=0.95, weight_decay=0.0,
                           options=MuonOptions(ortho="newton_schulz")))
    else:
        raise ValueError(era)
    covered = {n for gr in groups for n in gr["params"]}
    assert covered == set(names), set(names) - covered
    return groups


class Optimizer:
    """MuonAdamW over a dict of named tensors. groups: see nanochat_groups."""

    def __init__(self, groups: List[dict]):
        self.groups = groups
        self.state: Dict[str, dict] = {}

    @torch.no_grad()
    def step(self, P: Dict[str, torch.Tensor], G: Dict[str, torch.Tensor]) -> None:
        for gr in self.groups:
            for n in gr["params"]:
                st = self.state.setdefault(n, {})
                if gr["kind"] == "adamw":
                    adamw_step(P[n], G[n], st, gr["lr"], gr["betas"][0], gr["betas"][1],
                               gr["eps"], gr["weight_decay"])
                else:
                    muon_step(P[n], G[n], st, gr["lr"], gr["momentum"], gr["weight_decay"],
                              gr["options"])

    def state_tensors(self) -> "OrderedDict[str, torch.Tensor]":
        """Flattened optimizer state: adamw.exp_avg.<p>, adamw.exp_avg_sq.<p>,
        muon.momentum.<p>, muon.second_momentum.<p>."""
        out = OrderedDict()
        for n, st in self.state.items():
            if "exp_avg" in st:
                out[f"adamw.exp_avg.{n}"] = st["exp_avg"]
                out[f"adamw.exp_avg_sq.{n}"] = st["exp_avg_sq"]
            if "momentum_buffer" in st:
                out[f"muon.momentum.{n}"] = st["momentum_buffer"]
            if "second_momentum_buffer" in st:
                out[f"muon.second_momentum.{n}"] = st["second_momentum_buffer"]
        return out


# ----------------------------------------------------------------------------
# Schedules (scripts/base_train.py @HEAD), for reference; not used by fixtures.


def lr_multiplier(step: int, num_iterations: int, warmup: int = 40,
                  warmdown_ratio: float = 0.65, final_frac: float = 0.05) -> float:
    """Linear warmup over `warmup` steps, flat, then linear warmdown over the last
    warmdown_ratio of training down to final_frac."""
    warmdown = round(warmdown_ratio * num_iterations)
    if step < warmup:
        return (step + 1) / warmup
    if step <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - step) / warmdown
    return progress * 1.0 + (1 - progress) * final_frac


# ----------------------------------------------------------------------------
# safetensors (written by hand: 8-byte LE header length, JSON header, raw LE data)


def save_safetensors(path: str, tensors: Dict[str, torch.Tensor]) -> int:
    import json
    import struct
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype in (torch.float32, torch.float64):
            t, dt = t.to(torch.float32), "F32"
        elif t.dtype in (torch.int32, torch.int64):
            t, dt = t.to(torch.int32), "I32"
        else:
            raise TypeError(f"{name}: {t.dtype}")
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # pad header so data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return 8 + len(h) + off


def load_safetensors(path: str) -> "OrderedDict[str, torch.Tensor]":
    import json
    import struct
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = OrderedDict()
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[meta["dtype"]]
        arr = np.frombuffer(raw[base + a:base + b], dtype=dt).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out
