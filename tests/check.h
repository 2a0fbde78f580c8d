/* check.h: the tiny test framework every C test program uses.
 *
 * A test program is tests/test_NAME.c with a main() that calls TEST_RUN(fn) for each test
 * function and returns TEST_END(). Inside a test, CHECK(cond, fmt, ...) records a failure
 * with file:line and a message and goes on; REQUIRE(...) also returns from the test function.
 * TEST_END prints "# NAME: P passed, F failed" (", S skipped" added when a test skipped) which
 * tests/run sums; a program that crashes or prints no such line counts as failed. Numerical
 * checks print the tolerance and the worst element (see CHECK_CLOSE).
 *
 * SKIP_MISSING_DATA(fmt, ...) ends a test that cannot run because data from outside the
 * repository (the Fashion-MNIST files) is not installed: the test counts as skipped, never as
 * passed, and under MSD_REQUIRE_DATA=1 (make test, whose set-up installs the data) as failed.
 * Only *missing* data may skip: data that is there but unreadable or wrong is a failure. */
#ifndef MSD_TEST_CHECK_H
#define MSD_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* UNDER_ASAN: 1 in an AddressSanitizer build (gcc or clang), for tests that thin out work there */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static int check_passed_, check_failed_, check_skipped_, check_cur_failed_, check_cur_skipped_;
static const char *check_cur_name_ = "";

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            check_cur_failed_++;                                                  \
            fprintf(stdout, "  %s:%d: %s: check failed: %s:", __FILE__, __LINE__, \
                    check_cur_name_, #cond);                                      \
            fprintf(stdout, " " __VA_ARGS__);                                     \
            fputc('\n', stdout);                                                  \
        }                                                                         \
    } while (0)

#define REQUIRE(cond, ...)               \
    do {                                 \
        if (!(cond)) {                   \
            CHECK(cond, __VA_ARGS__);    \
            return;                      \
        }                                \
    } while (0)

/* Compare n floats: |a-b| <= atol + rtol*|b| for every element; on failure prints the worst. */
#define CHECK_CLOSE(a, b, n, atol, rtol, what)                                                \
    do {                                                                                      \
        long worst_ = -1; double worst_excess_ = 0;                                           \
        for (long i_ = 0; i_ < (long)(n); i_++) {                                             \
            double d_ = fabs((double)(a)[i_] - (double)(b)[i_]);                              \
            double lim_ = (atol) + (rtol) * fabs((double)(b)[i_]);                            \
            if (!(d_ <= lim_) && (worst_ < 0 || d_ - lim_ > worst_excess_ || isnan(d_))) {    \
                worst_ = i_; worst_excess_ = isnan(d_) ? INFINITY : d_ - lim_;                \
            }                                                                                 \
        }                                                                                     \
        CHECK(worst_ < 0, "%s: worst element %ld: got %.9g want %.9g (atol %g rtol %g)",     \
              (what), worst_, worst_ < 0 ? 0.0 : (double)(a)[worst_],                         \
              worst_ < 0 ? 0.0 : (double)(b)[worst_], (double)(atol), (double)(rtol));        \
    } while (0)

/* MSD_REQUIRE_DATA=1: missing data is a failure, not a skip */
static inline int check_require_data_(void) {
    const char *e = getenv("MSD_REQUIRE_DATA");
    return e && strcmp(e, "1") == 0;
}

/* 1 when neither PATH nor PATH.gz exists (a data file that is not installed; one that exists
 * but cannot be read is not missing) */
static inline int check_file_missing(const char *path) {
    char gz[4096];
    snprintf(gz, sizeof gz, "%s.gz", path);
    return access(path, F_OK) != 0 && access(gz, F_OK) != 0;
}

/* The fixture folder, found once from main's argv[0]: MSD_FIXTURES if set; else tests/fixtures
 * when tests/run started us from the repository root; else beside the binary
 * (build/VARIANT/tests/test_x -> ../../../tests/fixtures). */
static char check_fixture_dir_[1100] = "tests/fixtures";
static inline void check_find_fixtures(const char *argv0) {
    const char *env = getenv("MSD_FIXTURES");
    if (env) { snprintf(check_fixture_dir_, sizeof check_fixture_dir_, "%s", env); return; }
    if (access(check_fixture_dir_, R_OK | X_OK) == 0) return;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", argv0);
    char *slash = strrchr(buf, '/');
    if (slash) *slash = 0; else snprintf(buf, sizeof buf, ".");
    snprintf(check_fixture_dir_, sizeof check_fixture_dir_, "%s/../../../tests/fixtures", buf);
}

/* The path of fixture NAME (a static buffer, one of 4 in turn: at most 4 live at once). */
static inline const char *check_fixture(const char *name) {
    static char paths[4][1200];
    static int next;
    char *p = paths[next++ & 3];
    snprintf(p, sizeof paths[0], "%s/%s", check_fixture_dir_, name);
    return p;
}

#define SKIP_MISSING_DATA(...)                                                             \
    do {                                                                                   \
        if (check_require_data_()) {                                                       \
            check_cur_failed_++;                                                           \
            fprintf(stdout, "  %s: data missing under MSD_REQUIRE_DATA=1: ", check_cur_name_); \
        } else {                                                                           \
            check_cur_skipped_ = 1;                                                        \
            fprintf(stdout, "  SKIP %s: ", check_cur_name_);                               \
        }                                                                                  \
        fprintf(stdout, __VA_ARGS__);                                                      \
        fputc('\n', stdout);                                                               \
        return;                                                                            \
    } while (0)

#define TEST_RUN(fn)                                                              \
    do {                                                                          \
        check_cur_name_ = #fn;                                                    \
        check_cur_failed_ = 0;                                                    \
        check_cur_skipped_ = 0;                                                   \
        fn();                                                                     \
        if (check_cur_failed_) { check_failed_++; printf("FAIL %s\n", #fn); }    \
        else if (check_cur_skipped_) { check_skipped_++; printf("skip %s\n", #fn); } \
        else { check_passed_++; printf("ok   %s\n", #fn); }                       \
        fflush(stdout);                                                           \
    } while (0)

#define TEST_END()                                                                                 \
    ((check_skipped_ ? printf("# %s: %d passed, %d failed, %d skipped\n", __FILE__, check_passed_, \
                              check_failed_, check_skipped_)                                      \
                     : printf("# %s: %d passed, %d failed\n", __FILE__, check_passed_, check_failed_)), \
     check_failed_ ? 1 : 0)

#endif
