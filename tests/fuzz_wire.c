/* fuzz_wire.c: libFuzzer target over wire_decode, the decoder of untrusted headers.
 *
 * Input layout (tests/corpus/make_fuzz_wire_seeds.py writes valid examples):
 *   u8 nframes (taken mod 20) | u16le header_len | header bytes | per frame: u32le len | bytes
 * Lengths are clamped to what is left, so every input maps to some message. A decoded message
 * must then be self-consistent: each tensor's bytes are read in full (ASan checks they lie in
 * their frame), and re-encoding its header and decoding that again gives the same message.
 *
 * Not here: sockets (test_wire.c covers wire_recv on real ones). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wire.h"

static size_t take(const uint8_t **p, size_t *left, size_t want) {
    size_t n = want < *left ? want : *left;
    *p += n;
    *left -= n;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static WireMsg m, m2;
    const uint8_t *p = data;
    size_t left = size;
    if (left < 3) return 0;
    int nframes = p[0] % 20;
    size_t hlen = (size_t)p[1] | (size_t)p[2] << 8;
    take(&p, &left, 3);
    const uint8_t *hdr = p;
    hlen = take(&p, &left, hlen);
    void *frames[20];
    size_t lens[20];
    for (int i = 0; i < nframes; i++) {
        size_t flen = 0;
        if (left >= 4) { flen = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24; take(&p, &left, 4); }
        frames[i] = (void *)p;
        lens[i] = take(&p, &left, flen);
    }
    char err[256];
    memset(&m, 0, sizeof m);
    if (wire_decode(&m, hdr, hlen, nframes, frames, lens, err, sizeof err) != WIRE_OK) {
        if (strnlen(err, sizeof err) == 0) abort(); /* every refusal says why */
        return 0;
    }
    unsigned sum = 0;
    for (int i = 0; i < m.ntensors; i++)
        for (size_t k = 0; k < m.tensors[i].nbytes; k++) sum += ((const uint8_t *)m.tensors[i].data)[k];
    char buf[WIRE_MAX_HEADER];
    int len = wire_encode_header(&m, buf, sizeof buf);
    if (len <= 0) abort();
    memset(&m2, 0, sizeof m2);
    if (wire_decode(&m2, buf, (size_t)len, nframes, frames, lens, err, sizeof err) != WIRE_OK) abort();
    if (m2.op != m.op || m2.id != m.id || m2.status != m.status || m2.ntensors != m.ntensors || strcmp(m2.error, m.error))
        abort();
    for (int i = 0; i < m.ntensors; i++)
        if (strcmp(m.tensors[i].name, m2.tensors[i].name) || m.tensors[i].nbytes != m2.tensors[i].nbytes ||
            m.tensors[i].ndim != m2.tensors[i].ndim || m.tensors[i].dtype != m2.tensors[i].dtype)
            abort();
    return (int)(sum & 0);
}
