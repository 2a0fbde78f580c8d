/* blas.h: include OpenBLAS's cblas.h through this header. OpenBLAS's config pulls in
 * <complex.h>, whose `I` macro breaks every prototype with a parameter named I (backend.h's
 * linear ops); it is undefined here. Nothing else. */
#ifndef MSD_BLAS_H
#define MSD_BLAS_H

#include <cblas.h>

#ifdef I
#undef I
#endif

#endif
