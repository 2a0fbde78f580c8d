/* msd-mog-eval: judges generated 2-D toy samples against the true Gaussian mixture.
 *
 *   msd-mog-eval --mix FILE [--samples FILE|-] [--seed S] [--directions L]
 *   msd-mog-eval --mix FILE --draw N [--seed S]    print N true samples (classes in turn)
 *   --plot FILE.png   also draw a scatter plot: true samples in light grey, generated samples
 *                     coloured by class (512x512)
 *
 * Input: CSV lines "class,x,y" (class = name or id; '#' lines and a "class,x,y" header are
 * skipped), as `msd-student --sample` and the serving pipeline print them. For each class, as
 * many true samples are drawn (seeded) as were generated, and the tool prints one JSON object:
 *   energy       energy distance between generated and true samples of a class, averaged over
 *                the classes present (energy_pooled: over all samples at once, which mostly
 *                measures the class layout)
 *   sliced_w2    sliced 2-Wasserstein distance (L random directions), averaged over classes
 *                likewise (sliced_w2_pooled)
 *   mode_coverage  share of mixture components that receive at least half of their fair
 *                share of their class's samples, counting a sample for a component only when
 *                it is its most responsible component and within Mahalanobis distance 3
 *   on_support   share of generated samples within Mahalanobis distance 3 of a component of
 *                their own class
 *   per_class    the same per class
 * Bad input lines are an error naming the line. Not here: producing samples. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "log.h"
#include "mog.h"
#include "sampledist.h"

static struct {
    const char *mix, *samples, *plot;
    uint64_t seed;
    int directions;
    long draw;
} opt = {NULL, "-", NULL, 1, 128, 0};

static const ArgSpec args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification (docs/MOG.md)"),
    ARG_STR("--samples", &opt.samples, "FILE|-", "CSV lines class,x,y (default -: stdin)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the reference samples and directions (default 1)"),
    ARG_INT("--directions", &opt.directions, 1, 100000, "L", "directions of the sliced W2 (default 128)"),
    ARG_LONG("--draw", &opt.draw, 1, 10000000, "N", "print N true samples of the mixture as CSV (classes in turn):\n"
             "the perfect generator"),
    ARG_STR("--plot", &opt.plot, "FILE.png", "scatter plot of the samples over the true mixture (grey)"),
    ARG_END_,
};

typedef struct Stats { double energy, sw2, coverage, on_support; int n, covered, ncomp; } Stats;

static Stats eval_set(const Mog *m, const float *gen, const int32_t *cls, int n, uint64_t seed, int L, int only) {
    Stats s = {0};
    s.n = n;
    if (n == 0) return s;
    float *truth = msd_malloc(sizeof(float) * 2 * (size_t)n);
    mog_sample(m, truth, NULL, cls, n, seed, only < 0 ? 1000 : (uint64_t)only, 0);
    s.energy = energy_distance(gen, n, truth, n, m->dim);
    s.sw2 = sliced_w2(gen, truth, n, m->dim, L, seed);
    MogCoverage cov;
    mog_coverage(m, gen, cls, n, only, &cov);
    s.on_support = cov.on_support;
    s.coverage = cov.coverage;
    s.covered = cov.covered;
    s.ncomp = cov.ncomp;
    free(truth);
    return s;
}

static void print_stats(const Stats *s) {
    printf("\"n\": %d, \"energy\": %.6f, \"sliced_w2\": %.6f, \"mode_coverage\": %.4f, \"modes_covered\": %d, "
           "\"modes\": %d, \"on_support\": %.4f",
           s->n, s->energy, s->sw2, s->coverage, s->covered, s->ncomp, s->on_support);
}

int main(int argc, char **argv) {
    log_set_name("msd-mog-eval");
    if (args_tool(argc, argv, 1, "msd-mog-eval --mix FILE [--samples FILE|-] [--draw N] [options]",
                  "reads CSV lines class,x,y and prints one JSON object with the energy distance, sliced W2,\n"
                  "mode coverage and on-support share, overall and per class; with --draw N it prints true\n"
                  "samples instead\n", args))
        return 2;
    const char *mix = opt.mix, *samples = opt.samples, *plot_path = opt.plot;
    uint64_t seed = opt.seed;
    int L = opt.directions;
    long draw = opt.draw;
    Mog m;
    char err[1024];
    if (mog_load(&m, mix, err, sizeof err)) return msd_fail(1, "%s", err);
    if (m.dim != 2) return msd_fail(1, "%s: only 2-D mixtures are evaluated", mix);
    if (draw) {
        printf("class,x,y\n");
        for (long i = 0; i < draw; i++) {
            int32_t c = (int32_t)(i % m.nclasses);
            float p[2];
            mog_sample(&m, p, NULL, &c, 1, seed, 77, (uint64_t)i);
            printf("%s,%.6f,%.6f\n", m.class_names[c], p[0], p[1]);
        }
        mog_free(&m);
        return 0;
    }
    FILE *f = strcmp(samples, "-") ? fopen(samples, "r") : stdin;
    if (!f) return msd_fail(1, "%s: %s", samples, strerror(errno));
    const char *fname = strcmp(samples, "-") ? samples : "<stdin>";
    int cap = 1024, n = 0, lineno = 0;
    float *xy = msd_malloc(sizeof(float) * 2 * (size_t)cap);
    int32_t *cls = msd_malloc(sizeof(int32_t) * (size_t)cap);
    char line[512];
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            log_error("%s:%d: line too long", fname, lineno);
            rc = 1;
            break;
        }
        while (len && isspace((unsigned char)line[len - 1])) line[--len] = 0;
        if (!len || line[0] == '#' || !strcmp(line, "class,x,y")) continue;
        char *c1 = strchr(line, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
        if (!c1 || !c2 || strchr(c2 + 1, ',')) {
            log_error("%s:%d: expected 'class,x,y', got '%s'", fname, lineno, line);
            rc = 1;
            break;
        }
        *c1 = *c2 = 0;
        int c = mog_class_lookup(&m, line);
        char *e1, *e2;
        double x = strtod(c1 + 1, &e1), y = strtod(c2 + 1, &e2);
        if (c < 0) {
            log_error("%s:%d: unknown class '%s'", fname, lineno, line);
            rc = 1;
            break;
        }
        if (e1 == c1 + 1 || *e1 || e2 == c2 + 1 || *e2 || !isfinite(x) || !isfinite(y)) {
            log_error("%s:%d: coordinates '%s,%s' are not finite numbers", fname, lineno, c1 + 1,
                    c2 + 1);
            rc = 1;
            break;
        }
        if (n == cap) {
            if (cap >= 1 << 22) { log_error("more than %d samples", cap); rc = 1; break; }
            cap *= 2;
            xy = realloc(xy, sizeof(float) * 2 * (size_t)cap);
            cls = realloc(cls, sizeof(int32_t) * (size_t)cap);
            if (!xy || !cls) msd_die("out of memory");
        }
        xy[2 * n] = (float)x;
        xy[2 * n + 1] = (float)y;
        cls[n++] = c;
    }
    if (f != stdin) fclose(f);
    if (!rc && n < 2) { log_error("%s: need at least 2 samples, got %d", fname, n); rc = 1; }
    if (!rc && plot_path && mog_scatter_png(plot_path, &m, xy, cls, n, seed, err, sizeof err)) {
        log_error("%s", err);
        rc = 1;
    }
    if (!rc) {
        /* per class first: the headline distances are their means (a pooled distance is
         * dominated by how far apart the classes are, and barely sees a class's modes) */
        Stats all = eval_set(&m, xy, cls, n, seed, L, -1), *per = msd_calloc((size_t)m.nclasses, sizeof(Stats));
        float *cx = msd_malloc(sizeof(float) * 2 * (size_t)n);
        int32_t *cc = msd_malloc(sizeof(int32_t) * (size_t)n);
        double e_sum = 0, w_sum = 0;
        int nc = 0;
        for (int c = 0; c < m.nclasses; c++) {
            int k = 0;
            for (int i = 0; i < n; i++)
                if (cls[i] == c) { cx[2 * k] = xy[2 * i]; cx[2 * k + 1] = xy[2 * i + 1]; cc[k++] = c; }
            if (k < 2) continue;
            per[c] = eval_set(&m, cx, cc, k, seed, L, c);
            e_sum += per[c].energy;
            w_sum += per[c].sw2;
            nc++;
        }
        double pooled = all.energy, pooled_w = all.sw2;
        all.energy = nc ? e_sum / nc : 0;
        all.sw2 = nc ? w_sum / nc : 0;
        printf("{");
        print_stats(&all);
        printf(", \"classes\": %d, \"energy_pooled\": %.6f, \"sliced_w2_pooled\": %.6f, \"per_class\": [", nc, pooled,
               pooled_w);
        int first = 1;
        for (int c = 0; c < m.nclasses; c++) {
            if (per[c].n < 2) continue;
            printf("%s{\"class\": \"%s\", ", first ? "" : ", ", m.class_names[c]);
            print_stats(&per[c]);
            printf("}");
            first = 0;
        }
        printf("]}\n");
        free(cx);
        free(cc);
        free(per);
    }
    free(xy);
    free(cls);
    mog_free(&m);
    return rc;
}
