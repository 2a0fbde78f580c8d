/* fsutil.c: see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

int fs_lock_writer(const char *file, char *err, size_t errlen) {
    char path[4200];
    if (snprintf(path, sizeof path, "%s.lock", file) >= (int)sizeof path)
        return msd_errf(err, errlen, "path '%.100s' too long", file);
    const char *slash = strrchr(file, '/');
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", slash && slash > file ? (int)(slash - file) : 1, slash ? file : ".");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return msd_errf(err, errlen, "cannot open the lock file %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        if (e != EWOULDBLOCK) return msd_errf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        char *end;
        long pid = r > 0 ? strtol(buf, &end, 10) : 0;
        char who[64] = "another process";
        if (pid > 0 && (*end == '\n' || *end == 0)) snprintf(who, sizeof who, "process %ld", pid);
        return msd_errf(err, errlen,
                        "run folder %s is in use by another run: %s holds %s (two runs writing one folder would mix "
                        "their checkpoints and metrics); wait for that run to end, stop it, or use another run folder",
                        dir, who, path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return msd_errf(err, errlen, "cannot write the lock file %s: %s", path, strerror(e));
    }
    return fd;
}

int fs_file_hash(const char *path, char out[17], char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return msd_errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    uint64_t h = 14695981039346656037ull;
    unsigned char buf[8192];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < r; i++) h = (h ^ buf[i]) * 1099511628211ull;
    int bad = ferror(f);
    fclose(f);
    if (bad) return msd_errf(err, errlen, "cannot read %s", path);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return 0;
}
