/* test_dmd.c: common/dmd.c, the DMD2 pieces the student and the critic share, against an
 * independent PyTorch reference (tests/torch_dmd_ref.py -> tests/fixtures/dmd_ref.safetensors):
 *   - dmd_generator_grad: the generator's gradient dx = g / numel with g = (D_fake - D_real) / w,
 *     w = mean |x - D_real| per sample, non-finite g replaced by 0, and the returned L_DM, on a
 *     toy-shaped batch (with a w = 0 sample whose g is inf and one whose g is NaN) and a small
 *     image batch;
 *   - dmd_sigma_table: the 1000-entry Karras table (and a 7-entry one), ascending.
 *
 * Tolerance: the reference is float64 from the same float32 inputs, rounded to float32; dmd.c
 * works in double and rounds once, so every element agrees to a few float32 ulps:
 * |ours - ref| <= 1e-6 |ref| (zeros exactly). The loss likewise to 1e-6 relative. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dmd.h"
#include "safetensors.h"

#define RTOL 1e-6

static StFile fx;
static int have_fx;

/* Fixture tensor as float32 (malloc'd) with its shape in dims (may be NULL); NULL if missing. */
static float *fx_get(const char *name, int64_t *numel, int64_t dims[2]) {
    const StTensor *t = st_find(&fx, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, out);
    if (numel) *numel = t->numel;
    if (dims) { dims[0] = t->ndim > 0 ? t->shape[0] : 1; dims[1] = t->ndim > 1 ? t->shape[1] : 1; }
    return out;
}

static void generator_grad_case(const char *name) {
    char k[64];
    int64_t dims[2], n;
    snprintf(k, sizeof k, "%s.x", name);
    float *x = fx_get(k, &n, dims);
    snprintf(k, sizeof k, "%s.d_real", name);
    float *dr = fx_get(k, NULL, NULL);
    snprintf(k, sizeof k, "%s.d_fake", name);
    float *df = fx_get(k, NULL, NULL);
    snprintf(k, sizeof k, "%s.dx", name);
    float *want = fx_get(k, NULL, NULL);
    snprintf(k, sizeof k, "%s.loss", name);
    float *want_loss = fx_get(k, NULL, NULL);
    if (x && dr && df && want && want_loss) {
        float *dx = malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) dx[i] = NAN; /* every element must be written */
        double loss = dmd_generator_grad(dx, x, dr, df, dims[0], dims[1]);
        snprintf(k, sizeof k, "%s: dx", name);
        CHECK_CLOSE(dx, want, n, 0.0, RTOL, k);
        CHECK(fabs(loss - want_loss[0]) <= RTOL * fabs(want_loss[0]), "%s: L_DM %.9g, reference %.9g (rtol %g)",
              name, loss, (double)want_loss[0], RTOL);
        printf("  %s (%lld x %lld): L_DM %.6g\n", name, (long long)dims[0], (long long)dims[1], loss);
        free(dx);
    }
    free(x); free(dr); free(df); free(want); free(want_loss);
}

static void test_generator_grad_toy(void) {
    REQUIRE(have_fx, "no fixture");
    generator_grad_case("toy");
}

static void test_generator_grad_image(void) {
    REQUIRE(have_fx, "no fixture");
    generator_grad_case("img");
}

/* The toy case's samples 4 and 5 have w = 0: their rows of dx are exactly 0 (inf and NaN
 * replaced), and the other rows do not depend on them (per-sample normaliser). */
static void test_degenerate_samples(void) {
    REQUIRE(have_fx, "no fixture");
    int64_t dims[2], n;
    float *x = fx_get("toy.x", &n, dims), *dr = fx_get("toy.d_real", NULL, NULL), *df = fx_get("toy.d_fake", NULL, NULL);
    REQUIRE(x && dr && df && dims[0] == 6);
    int64_t D = dims[1];
    float dx[64], dx4[64];
    REQUIRE(n <= 64);
    dmd_generator_grad(dx, x, dr, df, 6, D);
    for (int64_t j = 4 * D; j < 6 * D; j++) CHECK(dx[j] == 0.0f, "dx[%lld] = %g, want 0", (long long)j, (double)dx[j]);
    /* the first 4 samples alone: the same g, the numel of 4 samples instead of 6 */
    dmd_generator_grad(dx4, x, dr, df, 4, D);
    for (int64_t j = 0; j < 4 * D; j++)
        CHECK(fabs(dx4[j] * 4.0 - dx[j] * 6.0) <= RTOL * fabs(dx[j] * 6.0), "dx[%lld]: batch of 4 %g, of 6 %g",
              (long long)j, (double)dx4[j], (double)dx[j]);
    free(x); free(dr); free(df);
}

static void table_case(const char *name, int n) {
    int64_t m;
    float *want = fx_get(name, &m, NULL);
    if (!want) return;
    CHECK(m == n, "%s has %lld entries", name, (long long)m);
    float *t = malloc((size_t)n * sizeof(float));
    dmd_sigma_table(t, n);
    CHECK_CLOSE(t, want, n, 0.0, RTOL, name);
    for (int i = 1; i < n; i++) CHECK(t[i] > t[i - 1], "%s not ascending at %d", name, i);
    free(t);
    free(want);
}

static void test_sigma_table(void) {
    REQUIRE(have_fx, "no fixture");
    table_case("table1000", DMD_TABLE_N);
    table_case("table7", 7);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    char err[512];
    have_fx = st_read(&fx, check_fixture("dmd_ref.safetensors"), err, sizeof err) == 0;
    if (!have_fx) printf("  cannot read the PyTorch fixture: %s\n", err);
    TEST_RUN(test_generator_grad_toy);
    TEST_RUN(test_generator_grad_image);
    TEST_RUN(test_degenerate_samples);
    TEST_RUN(test_sigma_table);
    st_free(&fx);
    return TEST_END();
}
