/* critic.h: msd-critic's modes beyond main.c's toy ones: the image critic (critic_image.c). */
#ifndef MSD_PROCS_CRITIC_H
#define MSD_PROCS_CRITIC_H

#include <stddef.h>
#include <stdint.h>

#include "proc.h"
#include "wire.h"

/* Restarts (docs/PIPELINES.md "Restarts"): a critic's state changes with every FAKE_TRAIN, so
 * it serves nothing but RESUME {"updates"} until its student has sent one, and refuses (busy)
 * requests with a smaller id than that RESUME's (a dead student's). */
typedef struct CriticGate {
    int resumed;          /* a RESUME arrived: requests are served */
    uint64_t floor_id;    /* requests with a smaller id are stale (the last RESUME's id) */
} CriticGate;
/* 1 after answering BUSY when `req` may not be served yet (no RESUME, or stale), else 0. */
int critic_gate_refuse(const CriticGate *g, void *sock, const WireMsg *req);
/* RESUME {"updates" i64 (1), optionally "span" i64 (1)}: closes the gate and reads the count
 * into *want and the span (0 when absent) into *span: the student accepts any state after want
 * .. want + span updates (the critic updates of its next step, which it resumes part-way).
 * -1 after answering a bad request. */
int critic_resume_begin(CriticGate *g, void *sock, const WireMsg *req, int64_t *want, int64_t *span);
/* The rollback to `held` updates (from `from`) is done: logs it, opens the gate from this
 * RESUME's id on and answers it with {"updates": held}. */
void critic_resume_done(CriticGate *g, void *sock, const WireMsg *req, int64_t held, const char *from);
/* Before SAVE overwrites `ckpt`: the file there becomes ckpt.prev (a hard link renamed over
 * it: both names always hold a whole file). The critic saves just before its student does and
 * either may die in between, so the state the student's checkpoint belongs to is one of the
 * two. 0 (also when there is no file yet), or -1 with a message. */
int critic_keep_prev(const char *ckpt, char *err, size_t errlen);
/* Loads checkpoint `file` into the critic `ctx` and says its update count; 0 or -1 with a message. */
typedef int (*CriticLoadFn)(void *ctx, const char *file, int64_t *updates, char *err, size_t errlen);
/* Loads `ckpt`, then `ckpt.prev`, until one holds want .. want + span updates: 0 with its count
 * in *held and its name in `from`; 1 when neither does (the message says what they hold); -1
 * when one cannot be read. */
int critic_find_updates(const char *ckpt, int64_t want, int64_t span, CriticLoadFn load, void *ctx, int64_t *held,
                        char *from, size_t fromlen, char *err, size_t errlen);

/* --mode image: the fake-score UNet of an image student (stage 2); its options (parsed by
 * proc_main before the call). Returns the process's exit status. */
extern const ArgSpec critic_image_args[];
int critic_image_run(Proc *p);

#endif
