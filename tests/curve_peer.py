#!/usr/bin/env python3
"""curve_peer.py: a test peer for the CurveZMQ gate of a run's tcp endpoints (tests/test_slurm.sh).

    curve_peer.py ENDPOINT run KEYFILE     the run's client key pair and server key (control)
    curve_peer.py ENDPOINT stranger KEYFILE the run's server public key, a fresh client key pair
    curve_peer.py ENDPOINT plain           no CurveZMQ at all (the NULL mechanism)

Connects one DEALER to ENDPOINT through libzmq itself (ctypes: no pyzmq needed) and watches its
handshake with a socket monitor for at most 10 s. Prints one line and exits:
    admitted            0  the handshake succeeded
    refused EVENT       1  the handshake failed (EVENT: auth, protocol, no-detail)
    no handshake        2  neither within 10 s
Any other problem (libzmq not found, a bad key file): a message on stderr, exit 3."""
import ctypes
import ctypes.util
import struct
import sys
import time

ZMQ_PAIR, ZMQ_DEALER = 0, 5
ZMQ_LINGER, ZMQ_RCVTIMEO = 17, 27
ZMQ_CURVE_PUBLICKEY, ZMQ_CURVE_SECRETKEY, ZMQ_CURVE_SERVERKEY = 48, 49, 50
EV_NO_DETAIL, EV_SUCCEEDED, EV_PROTOCOL, EV_AUTH = 0x0800, 0x1000, 0x2000, 0x4000


def die(msg):
    print("curve_peer: ERROR " + msg, file=sys.stderr)
    sys.exit(3)


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("run", "stranger", "plain") or (sys.argv[2] != "plain") != (len(sys.argv) == 4):
        die("usage: curve_peer.py ENDPOINT run|stranger KEYFILE | ENDPOINT plain")
    ep, how = sys.argv[1].encode(), sys.argv[2]
    name = ctypes.util.find_library("zmq") or "libzmq.so.5"
    try:
        z = ctypes.CDLL(name)
    except OSError as e:
        die("cannot load libzmq (%s): %s" % (name, e))
    z.zmq_ctx_new.restype = ctypes.c_void_p
    z.zmq_socket.restype = ctypes.c_void_p
    z.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
    z.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    z.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    z.zmq_socket_monitor.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    z.zmq_recv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    z.zmq_close.argtypes = [ctypes.c_void_p]
    z.zmq_ctx_term.argtypes = [ctypes.c_void_p]
    z.zmq_curve_keypair.argtypes = [ctypes.c_char_p, ctypes.c_char_p]

    def setopt(s, opt, val):
        buf = ctypes.create_string_buffer(val, len(val)) if isinstance(val, bytes) else ctypes.c_int(val)
        if z.zmq_setsockopt(s, opt, ctypes.byref(buf), len(val) if isinstance(val, bytes) else 4) != 0:
            die("zmq_setsockopt %d failed" % opt)

    ctx = z.zmq_ctx_new()
    s = z.zmq_socket(ctx, ZMQ_DEALER)
    setopt(s, ZMQ_LINGER, 0)
    if how != "plain":
        keys = {}
        try:
            for line in open(sys.argv[3]):
                f = line.split()
                if len(f) == 2 and len(f[1]) == 40:
                    keys[f[0]] = f[1].encode()
        except OSError as e:
            die("%s: %s" % (sys.argv[3], e))
        if "server-public" not in keys or (how == "run" and not {"client-public", "client-secret"} <= keys.keys()):
            die("%s: no server-public (and client keys for 'run')" % sys.argv[3])
        if how == "stranger":
            pub, sec = ctypes.create_string_buffer(41), ctypes.create_string_buffer(41)
            if z.zmq_curve_keypair(pub, sec) != 0:
                die("zmq_curve_keypair failed (libzmq without CURVE?)")
            keys["client-public"], keys["client-secret"] = pub.value, sec.value
        setopt(s, ZMQ_CURVE_SERVERKEY, keys["server-public"])
        setopt(s, ZMQ_CURVE_PUBLICKEY, keys["client-public"])
        setopt(s, ZMQ_CURVE_SECRETKEY, keys["client-secret"])
    mon_ep = b"inproc://curve-peer-monitor"
    if z.zmq_socket_monitor(s, mon_ep, EV_NO_DETAIL | EV_SUCCEEDED | EV_PROTOCOL | EV_AUTH) != 0:
        die("zmq_socket_monitor failed")
    mon = z.zmq_socket(ctx, ZMQ_PAIR)
    setopt(mon, ZMQ_LINGER, 0)
    setopt(mon, ZMQ_RCVTIMEO, 500)
    z.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if z.zmq_connect(mon, mon_ep) != 0 or z.zmq_connect(s, ep) != 0:
        die("zmq_connect %s failed" % ep.decode())
    verdict, rc = "no handshake", 2
    end = time.monotonic() + 10
    buf = ctypes.create_string_buffer(256)
    while time.monotonic() < end:
        n = z.zmq_recv(mon, buf, 256, 0)
        if n < 0:
            continue  # the 0.5 s receive timeout: look at the clock again
        if n >= 6:
            ev, val = struct.unpack("<HI", buf.raw[:6])
            z.zmq_recv(mon, buf, 256, 0)  # the second frame: the endpoint
            if ev == EV_SUCCEEDED:
                verdict, rc = "admitted", 0
            else:
                what = {EV_AUTH: "auth", EV_PROTOCOL: "protocol", EV_NO_DETAIL: "no-detail"}.get(ev, hex(ev))
                verdict, rc = "refused %s (%d)" % (what, val), 1
            break
    print(verdict)
    sys.stdout.flush()
    z.zmq_close(mon)
    z.zmq_close(s)
    z.zmq_ctx_term(ctx)
    sys.exit(rc)


main()
