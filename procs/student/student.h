/* student.h: the modes of msd-student beyond the walking skeleton (main.c): the mixture toy
 * (student_mog.c). */
#ifndef MSD_PROCS_STUDENT_H
#define MSD_PROCS_STUDENT_H

#include <stdint.h>

#include "proc.h"
#include "rpc.h"

/* Restarts (docs/PIPELINES.md "Restarts"): the critic's update count once its student has
 * finished `step` steps of --ttur updates each after a warm-up of `warmup` (0 at step 0: a
 * student at step 0 warms the critic up again). */
int64_t student_critic_updates(int64_t step, int warmup, int ttur);
/* RESUME {"updates", "span"} to the critic: it rolls back to a state after updates ..
 * updates + span updates, serves from then on and says which in *held (updates when the reply
 * does not say). 0, or -1 with the reason in rpc->err. */
int student_resume_critic_span(Rpc *rpc, void *critic, int64_t updates, int64_t span, int64_t *held);
/* The same with span 0: exactly that state. */
int student_resume_critic(Rpc *rpc, void *critic, int64_t updates);

/* --mode mog-train: DMD2 distillation of a one-step MLP generator on the mixture toy.
 * --mode mog-serve: answers GENERATE from a checkpoint. Their options are the tables below
 * (parsed by proc_main before the call); both return the process's exit status. */
extern const ArgSpec student_mog_train_args[];
extern const ArgSpec student_mog_serve_args[];
int student_mog_train(Proc *p);
int student_mog_serve(Proc *p);

#endif
