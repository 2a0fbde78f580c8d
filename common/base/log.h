/* log.h: log lines prefixed with the process name, and the three kinds of failure.
 *
 *   MSD_CHECK(cond)   a bug: prints file:line and the condition, then aborts. Always on.
 *   msd_die(...)      the environment failed (missing file, failed bind, OOM): one message,
 *                     exit status 1. The process is the unit of failure.
 *   msd_fail(st, ...) a usage or setup failure a process or tool reports itself: one log line
 *                     "[name] ERROR message", then returns st so callers write
 *                     `return msd_fail(2, "--mix %s: %s", path, err);`. The one error format
 *                     of processes and tools alike (a tool sets its name with log_set_name).
 *   untrusted input   is not handled here: functions return an error code and fill a message
 *                     buffer (see msd_errf) that the caller reports or sends to the peer.
 *
 * Log lines go to stderr as "[name] LEVEL message". Not thread-safe beyond what stdio gives. */
#ifndef MSD_LOG_H
#define MSD_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum { LOG_LVL_DEBUG = 0, LOG_LVL_INFO = 1, LOG_LVL_WARN = 2, LOG_LVL_ERROR = 3 };

void log_set_name(const char *name);       /* copied; "" before any call */
const char *log_get_name(void);
void log_set_level(int level);             /* messages below level are dropped */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

void msd_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void msd_check_fail(const char *file, int line, const char *cond) __attribute__((noreturn));

#define MSD_CHECK(cond) \
    do { if (!(cond)) msd_check_fail(__FILE__, __LINE__, #cond); } while (0)

/* Log "[name] ERROR message" and return status (see the top of this file). */
int msd_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Error-message buffer for untrusted-input paths: write a formatted message into err
 * (size errlen, may be NULL) and return -1, so callers can `return msd_errf(...)`. */
int msd_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* malloc/calloc that die with a clear message on failure (environment failure). */
void *msd_malloc(size_t n);
void *msd_calloc(size_t count, size_t size);
char *msd_strdup(const char *s);

/* Monotonic clock in seconds. */
double msd_now(void);
/* Wall-clock time (CLOCK_REALTIME) in ms since 1970: for deadlines that cross processes and
 * hosts (GENERATE's "deadline_ms"); never for measuring durations. */
int64_t msd_wall_ms(void);

#endif
