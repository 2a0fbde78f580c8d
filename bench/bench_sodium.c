/* bench_sodium.c: the ceiling of a tcp+Curve link (docs/SCALE.md, "Messaging across nodes").
 * CurveZMQ seals every message with libsodium's crypto_box_easy_afternm (XSalsa20-Poly1305 with
 * a precomputed key) on the sender's I/O thread and opens it on the receiver's, one core each.
 * This measures those two calls on 1 MiB messages, one thread, beside crypto_secretbox_easy
 * and a plain memcpy of the same size, so that bench_wire's tcp_curve throughput can be read
 * against what one core of this machine can encrypt. One JSON line per call:
 *   {"bench":"sodium","metric":"box_afternm_1MiB","value":0.19,"unit":"GB/s","min":0.17,"max":0.20}
 * value: the median of ROUNDS rounds of REPS messages each (GB = 1e9 bytes); min and max over
 * the rounds. Usage: bench_sodium [REPS [ROUNDS]] (default 400 5). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "log.h"
#include "bench.h"

#define MSG_BYTES (1u << 20)

typedef enum { BOX, OPEN, SECRETBOX, MEMCPY, KINDS } Kind;
static const char *NAMES[KINDS] = {"box_afternm_1MiB", "box_open_afternm_1MiB", "secretbox_1MiB", "memcpy_1MiB"};

int main(int argc, char **argv) {
    long reps = 400, rounds = 5;
    if (argc > 3 || (argc > 1 && args_num_long("REPS", argv[1], 1, 1000000, &reps) != 0) ||
        (argc > 2 && args_num_long("ROUNDS", argv[2], 1, 1000, &rounds) != 0)) {
        fprintf(stderr, "usage: bench_sodium [REPS [ROUNDS]] (1..1000000, 1..1000; default 400 5)\n");
        return 2;
    }
    if (sodium_init() < 0) msd_die("bench_sodium: sodium_init failed");
    unsigned char pk1[crypto_box_PUBLICKEYBYTES], sk1[crypto_box_SECRETKEYBYTES];
    unsigned char pk2[crypto_box_PUBLICKEYBYTES], sk2[crypto_box_SECRETKEYBYTES];
    unsigned char k12[crypto_box_BEFORENMBYTES], k21[crypto_box_BEFORENMBYTES];
    unsigned char nonce[crypto_box_NONCEBYTES], skey[crypto_secretbox_KEYBYTES];
    crypto_box_keypair(pk1, sk1);
    crypto_box_keypair(pk2, sk2);
    if (crypto_box_beforenm(k12, pk2, sk1) != 0 || crypto_box_beforenm(k21, pk1, sk2) != 0) msd_die("bench_sodium: beforenm failed");
    randombytes_buf(nonce, sizeof nonce);
    crypto_secretbox_keygen(skey);
    unsigned char *msg = msd_malloc(MSG_BYTES), *sealed = msd_malloc(MSG_BYTES + crypto_box_MACBYTES);
    unsigned char *opened = msd_malloc(MSG_BYTES);
    randombytes_buf(msg, MSG_BYTES);
    if (crypto_box_easy_afternm(sealed, msg, MSG_BYTES, nonce, k12) != 0) msd_die("bench_sodium: box failed");
    double *gbs = msd_malloc(sizeof(double) * (size_t)rounds);
    for (int k = 0; k < KINDS; k++) {
        for (long r = 0; r < rounds; r++) {
            double t0 = msd_now();
            for (long i = 0; i < reps; i++) {
                nonce[0] = (unsigned char)i; /* a fresh nonce per message, as CurveZMQ's counter */
                int rc = 0;
                if (k == BOX) rc = crypto_box_easy_afternm(sealed, msg, MSG_BYTES, nonce, k12);
                else if (k == OPEN) {
                    nonce[0] = 0; /* the message sealed above, opened again and again */
                    rc = crypto_box_open_easy_afternm(opened, sealed, MSG_BYTES + crypto_box_MACBYTES, nonce, k21);
                } else if (k == SECRETBOX) rc = crypto_secretbox_easy(sealed, msg, MSG_BYTES, nonce, skey);
                else memcpy(opened, msg, MSG_BYTES);
                if (rc != 0) msd_die("bench_sodium: %s failed", NAMES[k]);
            }
            gbs[r] = (double)reps * MSG_BYTES / (msd_now() - t0) / 1e9;
            __asm__ volatile("" ::"r"(opened) : "memory");
            if (k == BOX) { /* untimed: leave the message sealed with nonce 0 for OPEN */
                nonce[0] = 0;
                if (crypto_box_easy_afternm(sealed, msg, MSG_BYTES, nonce, k12) != 0) msd_die("bench_sodium: box failed");
            }
        }
        qsort(gbs, (size_t)rounds, sizeof *gbs, bench_cmp_double);
        printf("{\"bench\":\"sodium\",\"metric\":\"%s\",\"value\":%.3f,\"unit\":\"GB/s\",\"min\":%.3f,\"max\":%.3f}\n", NAMES[k],
               gbs[rounds / 2], gbs[0], gbs[rounds - 1]);
        fflush(stdout);
    }
    if (memcmp(opened, msg, MSG_BYTES) != 0) msd_die("bench_sodium: the copy differs from the message");
    free(gbs);
    free(msg);
    free(sealed);
    free(opened);
    return 0;
}
