/* log.c: see log.h. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char g_name[64];
static int g_level = LOG_LVL_INFO;

void log_set_name(const char *name) { snprintf(g_name, sizeof g_name, "%s", name ? name : ""); }
const char *log_get_name(void) { return g_name; }
void log_set_level(int level) { g_level = level; }

static void vlog(int level, const char *fmt, va_list ap) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "[%s] %s ", g_name[0] ? g_name : "msd", names[level]);
    if (n < 0) n = 0;
    if ((size_t)n < sizeof buf) vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] == '\n') buf[--len] = 0;
    fprintf(stderr, "%s\n", buf); /* one fprintf: lines from several processes do not interleave */
}

void log_msg(int level, const char *fmt, ...) {
    if (level < g_level || level < 0 || level > LOG_LVL_ERROR) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void msd_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_LVL_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

int msd_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_LVL_ERROR, fmt, ap);
    va_end(ap);
    return status;
}

void msd_check_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "[%s] BUG %s:%d: check failed: %s\n", g_name[0] ? g_name : "msd", file, line, cond);
    abort();
}

int msd_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *msd_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) msd_die("out of memory allocating %zu bytes", n);
    return p;
}

void *msd_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) msd_die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

char *msd_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = msd_malloc(n);
    memcpy(p, s, n);
    return p;
}

double msd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t msd_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
