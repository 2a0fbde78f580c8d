/* student_image.h: msd-student's image modes (student_image.c): stage 2 (DM, distribution
 * matching) of a one-step EDM UNet generator against the served UNet teacher. */
#ifndef MSD_PROCS_STUDENT_IMAGE_H
#define MSD_PROCS_STUDENT_IMAGE_H

#include "proc.h"

/* --mode image-train; its options (parsed by proc_main before the call). Returns the process's
 * exit status. */
extern const ArgSpec student_image_train_args[];
int student_image_train(Proc *p);

#endif
