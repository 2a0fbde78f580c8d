/* student.h: the modes of msd-student beyond the walking skeleton (main.c). */
#ifndef MSD_PROCS_STUDENT_H
#define MSD_PROCS_STUDENT_H

#include "proc.h"

/* --mode mog-train: DMD2 distillation of a one-step MLP generator on the mixture toy.
 * --mode mog-serve: answers GENERATE from a checkpoint. Both parse p->argv themselves and
 * return the process's exit status. */
int student_mog_train(Proc *p);
int student_mog_serve(Proc *p);

#endif
