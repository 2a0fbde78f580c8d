/* data.h: the sources msd-data serves BATCH from (one per --mode); main.c runs the loop. */
#ifndef MSD_PROCS_DATA_H
#define MSD_PROCS_DATA_H

#include "proc.h"
#include "wire.h"

typedef struct DataSource {
    void *self;
    /* Answer one BATCH request (the request is validated here: bad ones get BAD_REQUEST). */
    void (*batch)(void *self, void *sock, const WireMsg *req);
    void (*destroy)(void *self);
} DataSource;

/* --mode mog: the mixture toy; its options (data_mog_args) were parsed before the call.
 * 0, or 2 after a message. */
extern const ArgSpec data_mog_args[];
int data_mog_open(Proc *p, DataSource *src);
/* --mode fmnist: labelled images (Fashion-MNIST, PNG folders; data_fmnist.c). Same contract. */
extern const ArgSpec data_fmnist_args[];
int data_fmnist_open(Proc *p, DataSource *src);

#endif
