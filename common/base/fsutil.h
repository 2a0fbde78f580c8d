/* fsutil.h: small file-system helpers the processes share. */
#ifndef MSD_FSUTIL_H
#define MSD_FSUTIL_H

#include <stddef.h>

/* mkdir -p PATH (mode 0755). 0, or -1 with a message naming the part that failed. */
int fs_mkdir_p(const char *path, char *err, size_t errlen);
/* mkdir -p of the folder part of a file path ("a/b/c.txt" -> "a/b"); no-op without '/'. */
int fs_mkdir_parent(const char *file, char *err, size_t errlen);

/* The writer's lock of a file that one run writes (a checkpoint, a partition file): an
 * advisory flock(LOCK_EX) on FILE.lock, taken without waiting and held for the rest of the
 * process's life (the descriptor is returned and never closed; the kernel drops the lock when
 * the process ends, SIGKILL included, so a killed run leaves nothing that blocks the next).
 * The lock file holds the holder's pid. FILE's folder must exist. Returns the descriptor, or
 * -1 with a message naming the folder and the pid holding the lock when another process does
 * (two runs writing one folder would mix their checkpoints and metrics). */
int fs_lock_writer(const char *file, char *err, size_t errlen);

/* FNV-1a 64 of a file's bytes as 16 hex digits (out[17]): "the same contents" for settings
 * recorded in checkpoints. 0, or -1 with a message. */
int fs_file_hash(const char *path, char out[17], char *err, size_t errlen);

#endif
