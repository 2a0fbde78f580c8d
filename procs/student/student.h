/* student.h: the modes of msd-student beyond the walking skeleton (main.c): the mixture toy
 * (student_mog.c). */
#ifndef MSD_PROCS_STUDENT_H
#define MSD_PROCS_STUDENT_H

#include "proc.h"

/* --mode mog-train: DMD2 distillation of a one-step MLP generator on the mixture toy.
 * --mode mog-serve: answers GENERATE from a checkpoint. Their options are the tables below
 * (parsed by proc_main before the call); both return the process's exit status. */
extern const ArgSpec student_mog_train_args[];
extern const ArgSpec student_mog_serve_args[];
int student_mog_train(Proc *p);
int student_mog_serve(Proc *p);

#endif
