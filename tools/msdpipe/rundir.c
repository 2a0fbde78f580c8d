/* rundir.c: run directories and `msdpipe ps` / `msdpipe down`.
 *
 * Each running pipeline owns BASE/NAME-PID/ (mode 0700; PID is the launcher's): its ipc
 * sockets, the CURVE key file when it spans hosts, and `state`, a text file the launcher
 * rewrites (atomically) whenever a process changes state:
 *     msdpipe-state 1
 *     pipeline NAME
 *     file PATH
 *     launcher PID
 *     launcher_start TICKS            the launcher's start time (/proc/PID/stat field 22)
 *     started UNIX-SECONDS
 *     stop_timeout SECONDS
 *     state starting|up|stopping
 *     proc NAME PID STATE HOST        one per process; STATE starting|ready|done|exited|killed
 * BASE is --run-dir, else $XDG_RUNTIME_DIR/msdpipe, else /tmp/msdpipe-UID. `ps` and `down`
 * read these files; a directory whose launcher is gone (kill -9) is reported and removed. A pid
 * alone is not trusted: after a kill -9 the launcher's pid may be reused by an unrelated
 * process, so `down` signals only a process whose start time matches launcher_start. */
#include "msdpipe.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int rundir_base(const char *given, char *out, size_t cap, char *err, size_t errlen) {
    int n;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (given) n = snprintf(out, cap, "%s", given);
    else if (xdg && xdg[0] == '/') n = snprintf(out, cap, "%s/msdpipe", xdg);
    else n = snprintf(out, cap, "/tmp/msdpipe-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= cap) return msd_errf(err, errlen, "run directory base too long");
    if (mkdir(out, 0700) != 0 && errno != EEXIST) return msd_errf(err, errlen, "cannot create %s: %s", out, strerror(errno));
    struct stat st;
    if (lstat(out, &st) != 0) return msd_errf(err, errlen, "%s: %s", out, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return msd_errf(err, errlen, "%s is not a folder", out);
    /* the shared /tmp default must be ours and closed to others, or someone could plant sockets */
    if (!given && (st.st_uid != getuid() || (st.st_mode & 077)))
        return msd_errf(err, errlen, "%s belongs to another user or is open to others (mode %o); remove it or use --run-dir", out, (unsigned)(st.st_mode & 0777));
    return 0;
}

/* Remove dir and what is inside (at most `depth` levels of folders). */
static void remove_tree(int parent, const char *name, int depth) {
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
                if (unlinkat(fd, e->d_name, 0) != 0 && errno == EISDIR && depth > 0) remove_tree(fd, e->d_name, depth - 1);
            }
            closedir(d);
        } else {
            close(fd);
        }
    }
    unlinkat(parent, name, AT_REMOVEDIR);
}

void rundir_remove(const char *dir) { remove_tree(AT_FDCWD, dir, 3); }

int rundir_create(const char *base, const char *name, char *out, size_t cap, char *err, size_t errlen) {
    int n = snprintf(out, cap, "%s/%s-%d", base, name, (int)getpid());
    if (n < 0 || (size_t)n >= cap) return msd_errf(err, errlen, "run directory path too long");
    if (mkdir(out, 0700) != 0) {
        if (errno != EEXIST) return msd_errf(err, errlen, "cannot create %s: %s", out, strerror(errno));
        rundir_remove(out); /* left by an earlier launcher that had our pid: stale */
        if (mkdir(out, 0700) != 0) return msd_errf(err, errlen, "cannot create %s: %s", out, strerror(errno));
    }
    if (chmod(out, 0700) != 0) return msd_errf(err, errlen, "chmod %s: %s", out, strerror(errno));
    return 0;
}

int rundir_write_state(const char *dir, const char *text) {
    char tmp[PATH_MAX], path[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/state.tmp", dir);
    snprintf(path, sizeof path, "%s/state", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { close(fd); return -1; }
        off += (size_t)w;
    }
    close(fd);
    return rename(tmp, path);
}

/* ---- reading state files ------------------------------------------------------------- */

typedef struct StateProc {
    char name[PIPE_MAX_NAME], state[16], host[PIPE_MAX_NAME];
    int pid;
} StateProc;

typedef struct State {
    char dir[PATH_MAX], id[256], name[PIPE_MAX_NAME], file[PATH_MAX], state[16];
    int launcher;
    unsigned long long launcher_start;
    long started;
    double stop_timeout;
    int nprocs;
    StateProc procs[PIPE_MAX_PROCS];
} State;

/* Bounded copy (the state file is ours, but read it as if it were not). */
static void copy_field(char *dst, size_t cap, const char *src) {
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int read_state(const char *dir, const char *id, State *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->id, sizeof s->id, "%s", id);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/state", dir);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    char line[PATH_MAX + 64];
    int ok = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "msdpipe-state 1") == 0) ok = 1;
        else if (strncmp(line, "pipeline ", 9) == 0) copy_field(s->name, sizeof s->name, line + 9);
        else if (strncmp(line, "file ", 5) == 0) copy_field(s->file, sizeof s->file, line + 5);
        else if (strncmp(line, "state ", 6) == 0) copy_field(s->state, sizeof s->state, line + 6);
        else if (strncmp(line, "launcher ", 9) == 0) s->launcher = atoi(line + 9);
        else if (strncmp(line, "launcher_start ", 15) == 0) s->launcher_start = strtoull(line + 15, NULL, 10);
        else if (strncmp(line, "started ", 8) == 0) s->started = atol(line + 8);
        else if (strncmp(line, "stop_timeout ", 13) == 0) s->stop_timeout = atof(line + 13);
        else if (strncmp(line, "proc ", 5) == 0 && s->nprocs < PIPE_MAX_PROCS) {
            StateProc *p = &s->procs[s->nprocs];
            if (sscanf(line + 5, "%47s %d %15s %47s", p->name, &p->pid, p->state, p->host) == 4) s->nprocs++;
        }
    }
    fclose(f);
    return ok && s->launcher > 0 ? 0 : -1;
}

/* /proc/PID/stat into buf; returns what follows "(comm)" (field 3 on), or NULL. */
static const char *proc_stat_after_comm(int pid, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f) return NULL;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp + 2 : NULL;
}

/* Alive and not a zombie. */
static int pid_alive(int pid) {
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno != EPERM) return 0;
    char buf[512];
    const char *st = proc_stat_after_comm(pid, buf, sizeof buf);
    return !(st && (st[0] == 'Z' || st[0] == 'X'));
}

unsigned long long rundir_start_ticks(int pid) {
    char buf[1024];
    const char *p = proc_stat_after_comm(pid, buf, sizeof buf);
    /* p is field 3 (the state); starttime is field 22, 19 blanks further */
    for (int field = 3; field < 22 && p; field++) p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
    return p ? strtoull(p, NULL, 10) : 0;
}

/* The state file's launcher is alive and is the launcher that wrote it: same pid and same
 * start time (a state file without one, from an older launcher, is not trusted). */
static int launcher_alive(const State *s) {
    if (!pid_alive(s->launcher)) return 0;
    return s->launcher_start != 0 && rundir_start_ticks(s->launcher) == s->launcher_start;
}

/* Every run directory under the base with a live launcher, into *out (caller frees);
 * stale ones (launcher gone) are reported on stderr and removed. */
static int list_running(const char *base, State **out) {
    *out = NULL;
    DIR *d = opendir(base);
    if (!d) return 0;
    int n = 0, cap = 0;
    State *v = NULL;
    State *tmp = msd_malloc(sizeof *tmp);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[PATH_MAX];
        if (snprintf(dir, sizeof dir, "%s/%s", base, e->d_name) >= (int)sizeof dir) continue;
        if (read_state(dir, e->d_name, tmp) < 0) continue;
        if (!launcher_alive(tmp)) {
            log_info("%s: launcher %d is gone%s; removed its stale run directory", e->d_name, tmp->launcher,
                     pid_alive(tmp->launcher) ? " (its pid now belongs to another process)" : "");
            rundir_remove(dir);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            State *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) msd_die("out of memory listing pipelines");
            v = nv;
        }
        v[n++] = *tmp;
    }
    free(tmp);
    closedir(d);
    *out = v;
    return n;
}

int cmd_ps(Options *o) {
    char base[PATH_MAX], err[512];
    if (rundir_base(o->run_base, base, sizeof base, err, sizeof err) < 0) {
        log_error("%s", err);
        return MSDPIPE_EXIT_FAILED;
    }
    State *v;
    int n = list_running(base, &v);
    if (n == 0) printf("no running pipelines (in %s)\n", base);
    time_t now = time(NULL);
    for (int i = 0; i < n; i++) {
        State *s = &v[i];
        printf("%s  pipeline %s  launcher %d  %s  %d process%s  up %lds  %s  (%s)\n", s->id, s->name, s->launcher,
               s->state, s->nprocs, s->nprocs == 1 ? "" : "es", (long)(now - s->started), s->dir, s->file);
        for (int k = 0; k < s->nprocs; k++) {
            StateProc *p = &s->procs[k];
            const char *st = p->state;
            if ((strcmp(st, "ready") == 0 || strcmp(st, "starting") == 0) && !pid_alive(p->pid)) st = "gone";
            printf("  %-20s pid %-8d %-9s %s\n", p->name, p->pid, st, p->host);
        }
    }
    free(v);
    return 0;
}

int cmd_down(Options *o) {
    char base[PATH_MAX], err[512];
    if (rundir_base(o->run_base, base, sizeof base, err, sizeof err) < 0) {
        log_error("%s", err);
        return MSDPIPE_EXIT_FAILED;
    }
    State *v;
    int n = list_running(base, &v), pick = -1, matches = 0;
    for (int i = 0; i < n; i++) {
        char pid[32];
        snprintf(pid, sizeof pid, "%d", v[i].launcher);
        if (!o->target || strcmp(o->target, v[i].id) == 0 || strcmp(o->target, v[i].name) == 0 || strcmp(o->target, pid) == 0) {
            pick = i;
            matches++;
        }
    }
    int rc = 0;
    if (matches == 0) {
        log_error("no running pipeline%s%s (in %s)", o->target ? " matches " : "", o->target ? o->target : "", base);
        rc = MSDPIPE_EXIT_FAILED;
    } else if (matches > 1) {
        char names[2048];
        size_t len = 0;
        for (int i = 0; i < n && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, " %s", v[i].id);
        log_error("%d pipelines match; name one of:%s", matches, names);
        rc = MSDPIPE_EXIT_USAGE;
    } else {
        State *s = &v[pick];
        log_info("stopping %s (launcher %d)", s->id, s->launcher);
        if (kill(s->launcher, SIGTERM) != 0) {
            log_error("kill %d: %s", s->launcher, strerror(errno));
            rc = MSDPIPE_EXIT_FAILED;
        } else {
            /* the launcher stops its clients, then its servers, each within stop_timeout,
             * then kills what is left */
            double limit = 2 * (s->stop_timeout > 0 ? s->stop_timeout : 5) + 10;
            double end = msd_now() + limit;
            while (launcher_alive(s) && msd_now() < end) {
                struct timespec ts = {0, 50 * 1000000};
                nanosleep(&ts, NULL);
            }
            if (launcher_alive(s)) {
                log_error("%s: launcher %d still running after %.0f s", s->id, s->launcher, limit);
                rc = MSDPIPE_EXIT_FAILED;
            } else {
                log_info("stopped %s", s->id);
            }
        }
    }
    free(v);
    return rc;
}
