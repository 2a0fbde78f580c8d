/* student_image.h: msd-student's image modes (student_image.c): stage 2 (DM, distribution
 * matching) of a one-step EDM UNet generator against the served UNet teacher, and stage 1 (TSM,
 * teacher score matching) of a small denoiser that initialises it. */
#ifndef MSD_PROCS_STUDENT_IMAGE_H
#define MSD_PROCS_STUDENT_IMAGE_H

#include "proc.h"

/* --mode image-train; its options (parsed by proc_main before the call). Returns the process's
 * exit status. */
extern const ArgSpec student_image_train_args[];
int student_image_train(Proc *p);
/* --mode tsm-train (stage 1) and its options. */
extern const ArgSpec student_tsm_train_args[];
int student_tsm_train(Proc *p);
/* --mode image-serve (student_image_serve.c) and its options. */
extern const ArgSpec student_image_serve_args[];
int student_image_serve(Proc *p);

#endif
