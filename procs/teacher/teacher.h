/* teacher.h: what the files of msd-teacher share. main.c holds the serving loop (DENOISE
 * batching, SAMPLE) over any denoiser given as a TeacherNet, and the two exact denoisers (gauss,
 * mog); teacher_unet.c opens a trained UNet checkpoint as a TeacherNet; train.c is stage 0, the
 * trainer (its own loop: it connects to data and serves nothing). */
#ifndef MSD_PROCS_TEACHER_H
#define MSD_PROCS_TEACHER_H

#include <stdint.h>

#include "proc.h"
#include "wire.h"

/* out (N, D) = D(x; sigma, labels) on host memory; labels NULL when the net is unconditional. */
typedef void (*TeacherDenoiseFn)(void *self, float *out, const float *x, const float *sigma, const int32_t *labels,
                                 int64_t N, int64_t D);

typedef struct TeacherNet {
    char what[600];          /* for logs: "exact Gaussian-mixture denoiser", "UNet fmnist-s ..." */
    void *self;
    TeacherDenoiseFn denoise;
    void (*destroy)(void *self);
    int ndim;                /* dims of one sample; 0: any shape (the gauss formula) */
    int64_t shape[WIRE_MAX_DIMS - 1];
    int nclasses;            /* > 0: requests carry "label" i32 (N) in [0, nclasses) */
    int sigma_zero_ok;       /* sigma = 0 is valid (exact denoisers); else 0 < sigma <= 1e6 */
    int64_t max_sample;      /* largest N of one SAMPLE; 0: SAMPLE is not served */
    int slow;                /* a call may take longer than a heartbeat: compute under proc_keepalive */
} TeacherNet;

/* The serving loop's options (--max-batch, --window-ms; main.c), included by every serving mode. */
extern const ArgSpec teacher_loop_args[];
/* --mode serve: the UNet of --ckpt (EMA weights) as a TeacherNet; its options are
 * teacher_unet_args (parsed by proc_main before the call). 0, or 2 after a message. */
extern const ArgSpec teacher_unet_args[];
int teacher_unet_open(Proc *p, TeacherNet *net);
/* --mode train: stage 0 (train.c), options teacher_train_args. Runs to the end; returns the
 * exit status. */
extern const ArgSpec teacher_train_args[];
int teacher_train(Proc *p);

#endif
