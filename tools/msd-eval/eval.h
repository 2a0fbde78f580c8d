/* eval.h: what the msd-eval commands share (main.c: options, the classifier engine, the
 * Fashion-MNIST splits; students.c: the `students` command, docs/EVAL.md "Judging students"). */
#ifndef MSD_EVAL_H
#define MSD_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "classifier.h"
#include "dataset.h"

typedef struct Opts {
    const char *cmd, *out, *classifier, *data, *images, *labels, *split;
    const char *partition, *students, *one_step, *grid, *export_dir, *stage;
    long epochs, batch, n, ref_n;
    double lr;
    uint64_t seed;
    int threads, gpu;
    int no_judge;  /* students: generate for --grid/--out only, no scores */
    int argc;
    char **argv;   /* the command line, recorded in a manifest */
} Opts;

typedef struct Engine {
    const Backend *be;
    BackendCtx *ctx;
    Classifier *net;
} Engine;

/* The classifier on --gpu or the CPU, loaded from --classifier (load != 0), for batches of up
 * to batch images. 0, or -1 after logging the error. */
/* --classifier, else models/fmnist_classifier.safetensors here, else next to the binary. */
const char *classifier_path(const Opts *o, char *buf, size_t len);
int engine_open(Engine *e, const Opts *o, int load, int64_t batch);
void engine_close(Engine *e);
/* Fashion-MNIST split "train" or "test" (--data), checked to be 1x28x28. 0, or -1 (logged). */
int load_split(const Opts *o, const char *split, Dataset *d);
int ends_with(const char *s, const char *suf);

/* msd-eval students (students.c). */
int cmd_students(const Opts *o);

#endif
