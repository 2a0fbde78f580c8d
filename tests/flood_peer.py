#!/usr/bin/env python3
"""flood_peer.py: sends N malformed messages (a few bytes that are no msgpack header) to a ZeroMQ
endpoint from one DEALER, through libzmq itself (ctypes: no pyzmq needed), then closes.

    flood_peer.py ENDPOINT N

Used by tests/test_launcher.sh (the launcher's control socket logs them rate-limited, issue 15
#11). Exit 0 when all N were queued and sent within 10 s, 3 on any problem (message on stderr)."""
import ctypes
import ctypes.util
import sys

ZMQ_DEALER, ZMQ_LINGER, ZMQ_SNDTIMEO = 5, 17, 28


def main():
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        print("usage: flood_peer.py ENDPOINT N", file=sys.stderr)
        return 3
    z = ctypes.CDLL(ctypes.util.find_library("zmq") or "libzmq.so.5")
    z.zmq_ctx_new.restype = ctypes.c_void_p
    z.zmq_socket.restype = ctypes.c_void_p
    z.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
    z.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    z.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    z.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    z.zmq_close.argtypes = [ctypes.c_void_p]
    z.zmq_ctx_term.argtypes = [ctypes.c_void_p]
    ctx = z.zmq_ctx_new()
    s = z.zmq_socket(ctx, ZMQ_DEALER)
    for opt, val in ((ZMQ_LINGER, 10000), (ZMQ_SNDTIMEO, 10000)):
        v = ctypes.c_int(val)
        z.zmq_setsockopt(s, opt, ctypes.byref(v), ctypes.sizeof(v))
    if z.zmq_connect(s, sys.argv[1].encode()) != 0:
        print("flood_peer: cannot connect to %s" % sys.argv[1], file=sys.stderr)
        return 3
    junk = b"\xc1not a header"  # 0xc1 is never used in msgpack
    for i in range(int(sys.argv[2])):
        if z.zmq_send(s, junk, len(junk), 0) != len(junk):
            print("flood_peer: send %d failed" % i, file=sys.stderr)
            return 3
    z.zmq_close(s)  # linger: the queued messages go out before the context ends
    z.zmq_ctx_term(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
