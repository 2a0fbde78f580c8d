#!/usr/bin/env python3
"""make_fuzz_wire_seeds.py: writes the seed corpus of tests/fuzz_wire.c into
tests/corpus/fuzz_wire/: valid messages (every op, every dtype, zero-size and multi-tensor)
and a few near misses, in the fuzz input layout:
  u8 nframes | u16le header_len | header | per frame: u32le len | bytes
msgpack is encoded by hand (the format subset docs/PROTOCOL.md allows), no module needed."""
import os
import struct

def mp(v):
    if isinstance(v, bool):
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128: return bytes([v])
        if -32 <= v < 0: return struct.pack("b", v)
        if 0 <= v < 2**32: return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2**64: return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)

SIZES = [4, 2, 2, 4, 8, 1]  # f32 f16 bf16 i32 i64 u8

def message(op, tensors, mid=1, st=0, err=None, v=1):
    h = {"v": v, "op": op, "id": mid, "st": st}
    if err is not None: h["err"] = err
    h["t"] = [{"n": n, "dt": dt, "sh": sh} for n, dt, sh in tensors]
    hdr = mp(h)
    out = bytes([len(tensors)]) + struct.pack("<H", len(hdr)) + hdr
    for n, dt, sh in tensors:
        size = SIZES[dt]
        for d in sh: size *= d
        out += struct.pack("<I", size) + bytes(i % 251 for i in range(size))
    return out

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_wire")
os.makedirs(here, exist_ok=True)
seeds = {}
for op in range(1, 10):
    seeds[f"op{op}"] = message(op, [])
seeds["denoise"] = message(9, [("x", 0, [2, 1, 4, 4]), ("sigma", 0, [2])], mid=2**64 - 1)
seeds["dtypes"] = message(6, [(f"t{d}", d, [2, 3]) for d in range(6)])
seeds["empty_and_scalar"] = message(6, [("e", 0, [0, 5]), ("s", 4, [])])
seeds["error"] = message(5, [], st=4, err="denoise needs tensors x and sigma")
seeds["line"] = message(4, [("text", 5, [11])])
seeds["bad_version"] = message(6, [], v=2)
seeds["bad_frame_len"] = message(6, [("x", 0, [3])])[:-2]
for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds into {here}")
