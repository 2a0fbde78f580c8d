/* critic.h: msd-critic's modes beyond main.c's toy ones: the image critic (critic_image.c). */
#ifndef MSD_PROCS_CRITIC_H
#define MSD_PROCS_CRITIC_H

#include "proc.h"

/* --mode image: the fake-score UNet of an image student (stage 2); its options (parsed by
 * proc_main before the call). Returns the process's exit status. */
extern const ArgSpec critic_image_args[];
int critic_image_run(Proc *p);

#endif
