#!/usr/bin/env python3
"""Write a llama-architecture GGUF v3 file of d8's size with random f32 weights, by hand
(no gguf package), for timing llama.cpp's f32 decode against nanochat's d8 (issue 8).

d8 (models/specs/d8.xml): 8 layers, n_embd 512, 4 heads of 128, vocab 8192, relu^2 MLP
of 2048 (2 matrices), untied embedding and lm_head: 33.55M parameters.
Here: llama's SwiGLU MLP has 3 matrices, so feed_forward_length 1365 (3*512*1365 ~ 2*512*2048)
keeps the weight bytes within 0.01% of d8's. Every tensor is F32. Decode speed does not
depend on the values.
Usage: make_gguf.py OUT.gguf [--ffn 1365] [--layers 8] [--embd 512] [--heads 4] [--vocab 8192] [--ctx 256]
"""
import argparse, os, struct, sys
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--ffn", type=int, default=1365)
ap.add_argument("--layers", type=int, default=8)
ap.add_argument("--embd", type=int, default=512)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--vocab", type=int, default=8192)
ap.add_argument("--ctx", type=int, default=256)
a = ap.parse_args()
E, L, H, V, F = a.embd, a.layers, a.heads, a.vocab, a.ffn
HD = E // H
ALIGN = 32

# GGUF value types
U32, I32, F32T, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10

def s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b

def kv(key, typ, val):
    out = s(key) + struct.pack("<I", typ)
    if typ == U32: out += struct.pack("<I", val)
    elif typ == I32: out += struct.pack("<i", val)
    elif typ == F32T: out += struct.pack("<f", val)
    elif typ == STR: out += s(val)
    elif typ == ARR:
        et, items = val
        out += struct.pack("<IQ", et, len(items))
        if et == STR: out += b"".join(s(x) for x in items)
        elif et == I32: out += np.asarray(items, dtype="<i4").tobytes()
        elif et == F32T: out += np.asarray(items, dtype="<f4").tobytes()
        else: raise ValueError(et)
    else: raise ValueError(typ)
    return out

# GPT-2 byte-level BPE vocabulary: 256 byte tokens (GPT-2's byte-to-unicode form),
# V-257 two-byte tokens each built by one merge, and one control token (bos = eos).
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

b2u = bytes_to_unicode()
byte_tok = [b2u[b] for b in range(256)]
tokens, merges = list(byte_tok), []
# two-byte merges, printable ASCII first (deterministic order)
order = list(range(32, 127)) + [b for b in range(256) if not 32 <= b < 127]
need = V - 256 - 1
done = False
for x in order:
    for y in order:
        if len(merges) == need: done = True; break
        merges.append(b2u[x] + " " + b2u[y]); tokens.append(b2u[x] + b2u[y])
    if done: break
tokens.append("<|endoftext|>")
assert len(tokens) == V and len(set(tokens)) == V
ttype = [1] * (V - 1) + [3]  # 1 normal, 3 control
BOS = V - 1

meta = [
    ("general.architecture", STR, "llama"),
    ("general.name", STR, f"nanochat-d{L}-size-llama-f32-random"),
    ("general.alignment", U32, ALIGN),
    ("general.file_type", U32, 0),  # ALL_F32
    ("llama.context_length", U32, a.ctx),
    ("llama.embedding_length", U32, E),
    ("llama.block_count", U32, L),
    ("llama.feed_forward_length", U32, F),
    ("llama.attention.head_count", U32, H),
    ("llama.attention.head_count_kv", U32, H),
    ("llama.attention.layer_norm_rms_epsilon", F32T, 1e-5),
    ("llama.rope.dimension_count", U32, HD),
    ("llama.rope.freq_base", F32T, 10000.0),
    ("llama.vocab_size", U32, V),
    ("tokenizer.ggml.model", STR, "gpt2"),
    ("tokenizer.ggml.pre", STR, "gpt-2"),
    ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
    ("tokenizer.ggml.token_type", ARR, (I32, ttype)),
    ("tokenizer.ggml.merges", ARR, (STR, merges)),
    ("tokenizer.ggml.bos_token_id", U32, BOS),
    ("tokenizer.ggml.eos_token_id", U32, BOS),
    ("tokenizer.ggml.add_bos_token", BOOL, 0),
]

# tensors: (name, ne) with ne0 innermost (a weight W of y = W x has ne = [in, out])
tens = [("token_embd.weight", [E, V])]
for i in range(L):
    p = f"blk.{i}."
    tens += [(p + "attn_norm.weight", [E]), (p + "attn_q.weight", [E, E]), (p + "attn_k.weight", [E, E]),
             (p + "attn_v.weight", [E, E]), (p + "attn_output.weight", [E, E]), (p + "ffn_norm.weight", [E]),
             (p + "ffn_gate.weight", [E, F]), (p + "ffn_up.weight", [E, F]), (p + "ffn_down.weight", [F, E])]
tens += [("output_norm.weight", [E]), ("output.weight", [E, V])]

def pad(n): return (n + ALIGN - 1) // ALIGN * ALIGN

info, off = b"", 0
offs = []
for name, ne in tens:
    offs.append(off)
    info += s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", 0, off)
    off = pad(off + 4 * int(np.prod(ne)))

def enc_kv(k, t, v):
    if t == BOOL:
        return s(k) + struct.pack("<IB", BOOL, v)
    return kv(k, t, v)

head = b"GGUF" + struct.pack("<IQQ", 3, len(tens), len(meta)) + b"".join(enc_kv(*m) for m in meta) + info
rng = np.random.default_rng(0)
with open(a.out + ".part", "wb") as f:
    f.write(head)
    f.write(b"\0" * (pad(len(head)) - len(head)))
    base = f.tell()
    for (name, ne), o in zip(tens, offs):
        f.seek(base + o)
        n = int(np.prod(ne))
        w = np.ones(n, np.float32) if name.endswith("norm.weight") else (rng.standard_normal(n, dtype=np.float32) * 0.02)
        f.write(w.astype("<f4").tobytes())
    f.truncate(base + off)
os.replace(a.out + ".part", a.out)

nparam = sum(int(np.prod(ne)) for _, ne in tens)
nmat = sum(int(np.prod(ne)) for n, ne in tens if not n.endswith("norm.weight"))
d8 = 2 * V * E + L * (4 * E * E + 2 * E * 4 * E)
print(f"wrote {a.out}: {len(tens)} tensors, {nparam} params ({nparam/1e6:.2f}M; matrices {nmat/1e6:.3f}M, "
      f"f32 weight bytes {4*nparam/1e6:.1f} MB), file {os.path.getsize(a.out)} bytes; "
      f"d{L} (nanochat, relu^2 MLP {4*E}) {d8/1e6:.3f}M params / {4*d8/1e6:.1f} MB; ffn {F}, ratio {nparam/d8:.4f}")
