/* fsutil.h: small file-system helpers the processes share. */
#ifndef MSD_FSUTIL_H
#define MSD_FSUTIL_H

#include <stddef.h>

/* mkdir -p PATH (mode 0755). 0, or -1 with a message naming the part that failed. */
int fs_mkdir_p(const char *path, char *err, size_t errlen);
/* mkdir -p of the folder part of a file path ("a/b/c.txt" -> "a/b"); no-op without '/'. */
int fs_mkdir_parent(const char *file, char *err, size_t errlen);

#endif
