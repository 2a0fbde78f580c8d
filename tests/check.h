/* check.h: the tiny test framework every C test program uses.
 *
 * A test program is tests/test_NAME.c with a main() that calls TEST_RUN(fn) for each test
 * function and returns TEST_END(). Inside a test, CHECK(cond, fmt, ...) records a failure
 * with file:line and a message and goes on; REQUIRE(...) also returns from the test function.
 * TEST_END prints "# NAME: P passed, F failed" which tests/run sums; a program that crashes
 * or prints no such line counts as failed. Numerical checks print the tolerance and the worst
 * element (see CHECK_CLOSE). */
#ifndef MSD_TEST_CHECK_H
#define MSD_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_passed_, check_failed_, check_cur_failed_;
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

#define TEST_RUN(fn)                                                              \
    do {                                                                          \
        check_cur_name_ = #fn;                                                    \
        check_cur_failed_ = 0;                                                    \
        fn();                                                                     \
        if (check_cur_failed_) { check_failed_++; printf("FAIL %s\n", #fn); }    \
        else { check_passed_++; printf("ok   %s\n", #fn); }                       \
        fflush(stdout);                                                           \
    } while (0)

#define TEST_END() \
    (printf("# %s: %d passed, %d failed\n", __FILE__, check_passed_, check_failed_), \
     check_failed_ ? 1 : 0)

#endif
