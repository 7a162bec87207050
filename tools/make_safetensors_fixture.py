#!/usr/bin/python3
"""Writes the safetensors fixtures under tests/fixtures/safetensors/ by hand
(struct + json only, no safetensors/torch package), as an independent oracle
for runtime/safetensors.c. tests/test_safetensors.c checks the values below.

  tiny.safetensors            laid out as the Rust crate writes files: compact
                              JSON, __metadata__ first, keys sorted, header
                              padded with spaces to a multiple of 8, data in
                              header order
  tiny_unordered.safetensors  the same tensors written the other way round:
                              json.dumps default separators, data in reverse
                              key order, header not padded (readers must accept)

Usage: /usr/bin/python3 tools/make_safetensors_fixture.py [outdir]
"""
import json
import os
import struct
import sys

METADATA = {"format": "pt", "note": "h\u00e9llo \u2713 \u65e5\u672c"}

# name -> (dtype, shape, raw little-endian bytes)
TENSORS = {
    "a.f32": ("F32", [2, 3], struct.pack("<6f", 0.0, 1.5, -2.25, 1e-3, 65504.0, -7.0)),
    "b.bf16": ("BF16", [4], struct.pack("<4H", 0x3F80, 0xC000, 0x3F00, 0x4049)),  # 1, -2, 0.5, 3.140625
    "c.f16": ("F16", [2, 2], struct.pack("<4e", 1.0, -2.0, 0.5, 65504.0)),
    "d.i32": ("I32", [3], struct.pack("<3i", -1, 0, 2147483647)),
    "e.i64": ("I64", [2, 1], struct.pack("<2q", -9223372036854775808, 1234567890123)),
    "f.u8": ("U8", [5], bytes([0, 1, 127, 128, 255])),
    "g.bool": ("BOOL", [2], bytes([1, 0])),
    "h.scalar": ("F32", [], struct.pack("<f", 42.0)),
    "i.empty": ("F32", [0, 3], b""),
    "transformer.h.0.attn.c_q.weight": ("F32", [2, 2], struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)),
}


def build(data_order, separators, pad):
    header = {"__metadata__": METADATA}
    data = b""
    offsets = {}
    for name in data_order:
        raw = TENSORS[name][2]
        offsets[name] = [len(data), len(data) + len(raw)]
        data += raw
    for name in sorted(TENSORS):
        dtype, shape, _ = TENSORS[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets[name]}
    text = json.dumps(header, separators=separators, ensure_ascii=False).encode("utf-8")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures", "safetensors")
    os.makedirs(out, exist_ok=True)
    names = sorted(TENSORS)
    files = {
        "tiny.safetensors": build(names, (",", ":"), True),
        "tiny_unordered.safetensors": build(list(reversed(names)), (", ", ": "), False),
    }
    for fname, blob in files.items():
        with open(os.path.join(out, fname), "wb") as f:
            f.write(blob)
        print(f"wrote {fname}: {len(blob)} bytes")


if __name__ == "__main__":
    main()
