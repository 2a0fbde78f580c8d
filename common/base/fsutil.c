/* fsutil.c: see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

int fs_mkdir_p(const char *path, char *err, size_t errlen) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return msd_errf(err, errlen, "folder path '%.100s' is empty or too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        struct stat st;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return msd_errf(err, errlen, "cannot create folder %s: %s", buf, strerror(errno));
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return msd_errf(err, errlen, "%s exists and is not a folder", buf);
        buf[i] = c;
    }
    return 0;
}

int fs_mkdir_parent(const char *file, char *err, size_t errlen) {
    const char *slash = strrchr(file, '/');
    if (!slash || slash == file) return 0;
    char dir[4096];
    size_t n = (size_t)(slash - file);
    if (n >= sizeof dir) return msd_errf(err, errlen, "path '%.100s' too long", file);
    memcpy(dir, file, n);
    dir[n] = 0;
    return fs_mkdir_p(dir, err, errlen);
}
