/* args.h: parsing a process's own command-line options (what proc_start leaves in p->argv).
 * Each getter reports a bad value as "[name] ERROR --opt VALUE: expected ..." on stderr and
 * returns -1, so a process's option loop can `return 2` on any failure.
 *
 *   for (int i = 1; i < p.argc; i++) {
 *       const char *a = p.argv[i];
 *       if (args_is(a, "--steps")) { if (args_long(&p, &i, &steps, 0, 1000000000)) return 2; }
 *       ...
 *   }
 * Not here: the skeleton options (proc.h). */
#ifndef MSD_ARGS_H
#define MSD_ARGS_H

#include <stdint.h>
#include <string.h>

#include "proc.h"

static inline int args_is(const char *a, const char *opt) { return strcmp(a, opt) == 0; }
/* The value after p->argv[*i] (advancing *i), or NULL with a message when missing. */
const char *args_value(Proc *p, int *i);
int args_long(Proc *p, int *i, long *out, long lo, long hi);
int args_int(Proc *p, int *i, int *out, int lo, int hi);
int args_u64(Proc *p, int *i, uint64_t *out);
int args_float(Proc *p, int *i, float *out, double lo, double hi);
int args_str(Proc *p, int *i, const char **out);
/* The value of the first "--mode VALUE" in p->argv, or def (processes pick their mode first,
 * then let the mode's own parser read every option). */
const char *args_mode(const Proc *p, const char *def);
/* For a mode that runs nothing on a GPU: with --gpu given, a message saying so (naming why)
 * and 2, so nothing silently runs on the CPU instead; else 0. */
int args_cpu_only(const Proc *p, const char *why);
/* An unknown option: message, returns 2. */
int args_unknown(Proc *p, const char *a);

#endif
