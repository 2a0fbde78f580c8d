#!/usr/bin/env python3
# rng_ref.py: an independent Python implementation of the mapping documented in common/base/philox.h,
# printing the golden values embedded in tests/test_rng.c (test_golden_values):
#   python3 tests/rng_ref.py
# (tests/torch_unet.py imports it for the dropout masks.)
import math
import struct

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(c, k):
    c, k = list(c), list(k)
    for r in range(10):
        if r:
            k = [(k[0] + W0) & MASK, (k[1] + W1) & MASK]
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & MASK, p1 & MASK, ((p0 >> 32) ^ c[3] ^ k[1]) & MASK, p0 & MASK]
    return c


def word(seed, stream, i):
    b = i // 4
    c = [b & MASK, b >> 32, stream & MASK, stream >> 32]
    return philox(c, [seed & MASK, seed >> 32])[i % 4]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def uniform(seed, stream, i):
    return f32((word(seed, stream, i) >> 8) * 2.0**-24)


def normal(seed, stream, i):
    p = i // 2
    u1 = ((word(seed, stream, 2 * p) >> 8) + 1) * 2.0**-24
    u2 = (word(seed, stream, 2 * p + 1) >> 8) * 2.0**-24
    r, a = math.sqrt(-2.0 * math.log(u1)), 6.283185307179586 * u2
    return f32(r * (math.sin(a) if i % 2 else math.cos(a)))


if __name__ == "__main__":
    SEED, STREAM, OFF = 0x123456789ABCDEF0, 0xFEDCBA9876543, (1 << 34) + 1
    print("seed %#x stream %#x offset %d" % (SEED, STREAM, OFF))
    print("u32:     " + ", ".join("0x%08xu" % word(SEED, STREAM, OFF + j) for j in range(6)))
    print("uniform: " + ", ".join("%.9gf" % uniform(SEED, STREAM, OFF + j) for j in range(6)))
    print("normal:  " + ", ".join("%.9gf" % normal(SEED, STREAM, OFF + j) for j in range(6)))
    print("int961:  " + ", ".join("%du" % ((word(SEED, STREAM, OFF + j) * 961) >> 32) for j in range(6)))
