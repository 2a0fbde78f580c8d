/* mog.c: see mog.h. */
#include "mog.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "log.h"
#include "philox.h"

void mog_free(Mog *m) {
    free(m->class_names);
    free(m->class_first);
    free(m->class_count);
    free(m->comp);
    memset(m, 0, sizeof *m);
}

/* Cholesky a = L L^T of a symmetric d x d matrix; returns -1 if not positive definite. */
static int cholesky(const double *a, double *l, int d) {
    memset(l, 0, sizeof(double) * (size_t)(d * d));
    for (int i = 0; i < d; i++) {
        for (int j = 0; j <= i; j++) {
            double s = a[i * d + j];
            for (int k = 0; k < j; k++) s -= l[i * d + k] * l[j * d + k];
            if (i == j) {
                if (!(s > 0)) return -1;
                l[i * d + i] = sqrt(s);
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    return 0;
}

/* Solve L L^T y = b in place (b becomes y). */
static void chol_solve(const double *l, double *b, int d) {
    for (int i = 0; i < d; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++) s -= l[i * d + k] * b[k];
        b[i] = s / l[i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double s = b[i];
        for (int k = i + 1; k < d; k++) s -= l[k * d + i] * b[k];
        b[i] = s / l[i * d + i];
    }
}

/* ---- parsing ---------------------------------------------------------------------------- */

typedef struct Parser {
    const char *name;
    int line;
    char *err;
    size_t errlen;
} Parser;

static int perr(Parser *p, const char *linetext, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(Parser *p, const char *linetext, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return msd_errf(p->err, p->errlen, "%s:%d: %s\n    %.200s", p->name, p->line, msg, linetext);
}

static int parse_double(const char *tok, double *out) {
    char *end;
    errno = 0;
    double v = strtod(tok, &end);
    if (end == tok || *end || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

#define MOG_MAX_TOKENS (3 + MOG_MAX_DIM + MOG_MAX_DIM * MOG_MAX_DIM)

int mog_parse(Mog *m, const char *text, size_t len, const char *name, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    Parser p = {name, 0, err, errlen};
    int ccap = 16, kcap = 64;
    m->class_names = msd_calloc((size_t)ccap, sizeof *m->class_names);
    m->class_first = msd_calloc((size_t)ccap, sizeof(int));
    m->class_count = msd_calloc((size_t)ccap, sizeof(int));
    m->comp = msd_calloc((size_t)kcap, sizeof *m->comp);
    size_t pos = 0;
    char line[1024];
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        p.line++;
        size_t n = end - pos;
        if (n >= sizeof line) {
            snprintf(line, 80, "%.*s", 76, text + pos);
            perr(&p, line, "line longer than %zu characters", sizeof line - 1);
            goto fail;
        }
        memcpy(line, text + pos, n);
        line[n] = 0;
        pos = end + 1;
        for (size_t i = 0; i < n; i++)
            if (line[i] == 0 || (!isprint((unsigned char)line[i]) && line[i] != '\t' && line[i] != '\r')) {
                perr(&p, "", "byte 0x%02x at column %zu is not text", (unsigned char)line[i], i + 1);
                goto fail;
            }
        char work[1024];
        memcpy(work, line, n + 1);
        char *hash = strchr(work, '#');
        if (hash) *hash = 0;
        char *tok[MOG_MAX_TOKENS + 1];
        int nt = 0;
        for (char *s = strtok(work, " \t\r"); s; s = strtok(NULL, " \t\r")) {
            if (nt == MOG_MAX_TOKENS + 1) break;
            tok[nt++] = s;
        }
        if (nt == 0) continue;
        if (m->dim == 0) {
            double d;
            if (strcmp(tok[0], "mixture") != 0 || nt != 2) {
                perr(&p, line, "the first statement must be 'mixture DIM'");
                goto fail;
            }
            if (parse_double(tok[1], &d) || d != floor(d) || d < 1 || d > MOG_MAX_DIM) {
                perr(&p, line, "dimension must be an integer in 1..%d, not '%s'", MOG_MAX_DIM, tok[1]);
                goto fail;
            }
            m->dim = (int)d;
        } else if (strcmp(tok[0], "mixture") == 0) {
            perr(&p, line, "'mixture' may appear only once");
            goto fail;
        } else if (strcmp(tok[0], "class") == 0) {
            if (nt != 2) { perr(&p, line, "expected 'class NAME'"); goto fail; }
            size_t nl = strlen(tok[1]);
            if (nl >= MOG_MAX_NAME) { perr(&p, line, "class name longer than %d characters", MOG_MAX_NAME - 1); goto fail; }
            for (size_t i = 0; i < nl; i++)
                if (!isalnum((unsigned char)tok[1][i]) && tok[1][i] != '_' && tok[1][i] != '-') {
                    perr(&p, line, "class name '%s' has a character other than letters, digits, '_' or '-'", tok[1]);
                    goto fail;
                }
            if (isdigit((unsigned char)tok[1][0])) {
                perr(&p, line, "class name '%s' must not start with a digit (ids are numbers)", tok[1]);
                goto fail;
            }
            for (int c = 0; c < m->nclasses; c++)
                if (strcmp(m->class_names[c], tok[1]) == 0) {
                    perr(&p, line, "class '%s' is defined twice", tok[1]);
                    goto fail;
                }
            if (m->nclasses > 0 && m->class_count[m->nclasses - 1] == 0) {
                perr(&p, line, "class '%s' has no components", m->class_names[m->nclasses - 1]);
                goto fail;
            }
            if (m->nclasses == MOG_MAX_CLASSES) { perr(&p, line, "more than %d classes", MOG_MAX_CLASSES); goto fail; }
            if (m->nclasses == ccap) {
                ccap *= 2;
                m->class_names = realloc(m->class_names, (size_t)ccap * sizeof *m->class_names);
                m->class_first = realloc(m->class_first, (size_t)ccap * sizeof(int));
                m->class_count = realloc(m->class_count, (size_t)ccap * sizeof(int));
                if (!m->class_names || !m->class_first || !m->class_count) msd_die("out of memory parsing %s", name);
            }
            snprintf(m->class_names[m->nclasses], MOG_MAX_NAME, "%s", tok[1]);
            m->class_first[m->nclasses] = m->ncomp;
            m->class_count[m->nclasses] = 0;
            m->nclasses++;
        } else if (strcmp(tok[0], "comp") == 0) {
            int d = m->dim;
            if (m->nclasses == 0) { perr(&p, line, "'comp' before any 'class'"); goto fail; }
            int iso = nt == 2 + d + 2 && strcmp(tok[2 + d], "iso") == 0;
            if (!iso && nt != 2 + d + d * d) {
                perr(&p, line, "expected 'comp WEIGHT' then %d mean values and %d covariance values (or 'iso STD'), got %d values",
                     d, d * d, nt - 1);
                goto fail;
            }
            if (m->ncomp == MOG_MAX_COMPONENTS) { perr(&p, line, "more than %d components", MOG_MAX_COMPONENTS); goto fail; }
            if (m->ncomp == kcap) {
                kcap *= 2;
                m->comp = realloc(m->comp, (size_t)kcap * sizeof *m->comp);
                if (!m->comp) msd_die("out of memory parsing %s", name);
            }
            MogComponent *k = &m->comp[m->ncomp];
            memset(k, 0, sizeof *k);
            k->cls = m->nclasses - 1;
            double v;
            if (parse_double(tok[1], &v) || !(v > 0)) { perr(&p, line, "weight '%s' must be a number > 0", tok[1]); goto fail; }
            k->weight = v;
            for (int i = 0; i < d; i++) {
                if (parse_double(tok[2 + i], &k->mean[i])) { perr(&p, line, "mean value '%s' is not a number", tok[2 + i]); goto fail; }
            }
            if (iso) {
                if (parse_double(tok[3 + d], &v) || !(v > 0)) { perr(&p, line, "iso std '%s' must be a number > 0", tok[3 + d]); goto fail; }
                for (int i = 0; i < d; i++) k->cov[i * d + i] = v * v;
            } else {
                for (int i = 0; i < d * d; i++)
                    if (parse_double(tok[2 + d + i], &k->cov[i])) { perr(&p, line, "covariance value '%s' is not a number", tok[2 + d + i]); goto fail; }
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < i; j++)
                        if (fabs(k->cov[i * d + j] - k->cov[j * d + i]) > 1e-9 * (1 + fabs(k->cov[i * d + j]))) {
                            perr(&p, line, "covariance is not symmetric (entries %d,%d and %d,%d differ)", i + 1, j + 1, j + 1, i + 1);
                            goto fail;
                        }
            }
            if (cholesky(k->cov, k->chol, d)) { perr(&p, line, "covariance is not positive definite"); goto fail; }
            m->ncomp++;
            m->class_count[m->nclasses - 1]++;
        } else {
            perr(&p, line, "unknown statement '%s' (expected mixture, class or comp)", tok[0]);
            goto fail;
        }
    }
    if (m->dim == 0) { p.line = p.line ? p.line : 1; perr(&p, "", "no 'mixture DIM' statement"); goto fail; }
    if (m->nclasses == 0) { perr(&p, "", "no classes"); goto fail; }
    if (m->class_count[m->nclasses - 1] == 0) {
        perr(&p, "", "class '%s' has no components", m->class_names[m->nclasses - 1]);
        goto fail;
    }
    for (int c = 0; c < m->nclasses; c++) {
        double s = 0;
        for (int i = 0; i < m->class_count[c]; i++) s += m->comp[m->class_first[c] + i].weight;
        for (int i = 0; i < m->class_count[c]; i++) m->comp[m->class_first[c] + i].weight /= s;
    }
    return 0;
fail:
    mog_free(m);
    return -1;
}

int mog_load(Mog *m, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return msd_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = msd_malloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= (size_t)64 << 20) {
                fclose(f);
                free(buf);
                return msd_errf(err, errlen, "%s: larger than 64 MiB, not a mixture specification", path);
            }
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) msd_die("out of memory reading %s", path);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return msd_errf(err, errlen, "%s: read error", path);
    }
    int rc = mog_parse(m, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

int mog_class_lookup(const Mog *m, const char *s) {
    for (int c = 0; c < m->nclasses; c++)
        if (strcmp(m->class_names[c], s) == 0) return c;
    if (!*s) return -1;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    if (strlen(s) > 6) return -1;
    int id = atoi(s);
    return id < m->nclasses ? id : -1;
}

int mog_parse_request(const Mog *m, const char *text, size_t len, int max, int *cls, long *count, char *err,
                      size_t errlen) {
    if (len > MOG_REQUEST_MAX_TEXT) return msd_errf(err, errlen, "a line holds at most %d bytes", MOG_REQUEST_MAX_TEXT);
    if (memchr(text, 0, len)) return msd_errf(err, errlen, "a line holds no NUL byte");
    char buf[MOG_REQUEST_MAX_TEXT + 1];
    memcpy(buf, text, len);
    buf[len] = 0;
    char *save = NULL, *name = strtok_r(buf, " \t\r", &save), *num = strtok_r(NULL, " \t\r", &save);
    if (!name || strtok_r(NULL, " \t\r", &save))
        return msd_errf(err, errlen, "expected a line \"CLASS [N]\" (a class name or id, then a sample count)");
    int c = mog_class_lookup(m, name);
    if (c < 0) {
        char msg[MOG_REQUEST_MAX_TEXT + 256];
        int n = snprintf(msg, sizeof msg, "unknown class '%.200s'; the classes are", name);
        for (int i = 0; i < m->nclasses && n < (int)sizeof msg - 80; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, " %s", m->class_names[i]);
        snprintf(msg + n, sizeof msg - (size_t)n, " (or ids 0..%d)", m->nclasses - 1);
        return msd_errf(err, errlen, "%s", msg);
    }
    long cnt = 1;
    if (num) {
        char *end;
        errno = 0;
        cnt = strtol(num, &end, 10);
        if (errno || *end || cnt < 1 || cnt > max)
            return msd_errf(err, errlen, "sample count '%.100s' must be an integer in 1..%d", num, max);
    }
    *cls = c;
    *count = cnt;
    return 0;
}

void mog_class_mean(const Mog *m, int cls, double *out) {
    MSD_CHECK(cls >= 0 && cls < m->nclasses);
    for (int i = 0; i < m->dim; i++) out[i] = 0;
    for (int k = m->class_first[cls]; k < m->class_first[cls] + m->class_count[cls]; k++)
        for (int i = 0; i < m->dim; i++) out[i] += m->comp[k].weight * m->comp[k].mean[i];
}

/* log N(x; mu, C) and C^-1 (x - mu) for C = cov + s2 I. */
static double comp_logpdf(const MogComponent *k, int d, const double *x, double s2, double *cinv_diff) {
    double c[MOG_MAX_DIM * MOG_MAX_DIM], l[MOG_MAX_DIM * MOG_MAX_DIM];
    memcpy(c, k->cov, sizeof(double) * (size_t)(d * d));
    for (int i = 0; i < d; i++) c[i * d + i] += s2;
    MSD_CHECK(cholesky(c, l, d) == 0); /* cov is PD (checked at parse) and s2 >= 0 */
    double diff[MOG_MAX_DIM];
    for (int i = 0; i < d; i++) diff[i] = x[i] - k->mean[i];
    /* Mahalanobis: solve L y = diff, |y|^2 */
    double y[MOG_MAX_DIM], q = 0, logdet = 0;
    for (int i = 0; i < d; i++) {
        double s = diff[i];
        for (int j = 0; j < i; j++) s -= l[i * d + j] * y[j];
        y[i] = s / l[i * d + i];
        q += y[i] * y[i];
        logdet += 2 * log(l[i * d + i]);
    }
    memcpy(cinv_diff, diff, sizeof(double) * (size_t)d);
    chol_solve(l, cinv_diff, d);
    return -0.5 * q - 0.5 * logdet - 0.5 * d * log(2 * M_PI);
}

void mog_denoise(const Mog *m, float *out, const float *x, const float *sigma, const int32_t *cls, int64_t n) {
    int d = m->dim;
    for (int64_t i = 0; i < n; i++) {
        int c = cls[i];
        MSD_CHECK(c >= 0 && c < m->nclasses);
        double s2 = (double)sigma[i] * (double)sigma[i];
        double xi[MOG_MAX_DIM];
        for (int j = 0; j < d; j++) xi[j] = x[i * d + j];
        int first = m->class_first[c], cnt = m->class_count[c];
        double logr[256], est[256][MOG_MAX_DIM]; /* per component: log weight, posterior mean */
        double acc[MOG_MAX_DIM] = {0}, maxl = -INFINITY, tot = 0;
        for (int b = 0; b < cnt; b += 256) {
            int nb = cnt - b < 256 ? cnt - b : 256;
            for (int k = 0; k < nb; k++) {
                const MogComponent *mc = &m->comp[first + b + k];
                double cd[MOG_MAX_DIM];
                logr[k] = log(mc->weight) + comp_logpdf(mc, d, xi, s2, cd);
                /* E[x0 | x, k] = mu + Sigma C^-1 (x - mu) */
                for (int r = 0; r < d; r++) {
                    double s = mc->mean[r];
                    for (int q = 0; q < d; q++) s += mc->cov[r * d + q] * cd[q];
                    est[k][r] = s;
                }
            }
            /* streaming log-sum-exp over blocks */
            double bmax = -INFINITY;
            for (int k = 0; k < nb; k++) bmax = logr[k] > bmax ? logr[k] : bmax;
            if (bmax > maxl) {
                double f = isfinite(maxl) ? exp(maxl - bmax) : 0;
                tot *= f;
                for (int r = 0; r < d; r++) acc[r] *= f;
                maxl = bmax;
            }
            for (int k = 0; k < nb; k++) {
                double w = exp(logr[k] - maxl);
                tot += w;
                for (int r = 0; r < d; r++) acc[r] += w * est[k][r];
            }
        }
        for (int r = 0; r < d; r++) out[i * d + r] = (float)(acc[r] / tot);
    }
}

int mog_assign(const Mog *m, const float *x, int cls) {
    MSD_CHECK(cls >= 0 && cls < m->nclasses);
    double xi[MOG_MAX_DIM], cd[MOG_MAX_DIM];
    for (int j = 0; j < m->dim; j++) xi[j] = x[j];
    int best = -1;
    double bestl = -INFINITY;
    for (int k = m->class_first[cls]; k < m->class_first[cls] + m->class_count[cls]; k++) {
        double l = log(m->comp[k].weight) + comp_logpdf(&m->comp[k], m->dim, xi, 0.0, cd);
        if (best < 0 || l > bestl) { best = k; bestl = l; }
    }
    return best;
}

void mog_sample(const Mog *m, float *out, int32_t *comp_out, const int32_t *cls, int64_t n, uint64_t seed,
                uint64_t stream, uint64_t offset) {
    int d = m->dim;
    uint64_t stride = 2 + (uint64_t)d + (uint64_t)(d & 1); /* one uniform, d normals, even-aligned */
    for (int64_t i = 0; i < n; i++) {
        int c = cls[i];
        MSD_CHECK(c >= 0 && c < m->nclasses);
        uint64_t base = (offset + (uint64_t)i) * stride;
        double u = rng_uniform1(seed, stream, base), cum = 0;
        int k = m->class_first[c] + m->class_count[c] - 1;
        for (int j = m->class_first[c]; j < m->class_first[c] + m->class_count[c]; j++) {
            cum += m->comp[j].weight;
            if (u < cum) { k = j; break; }
        }
        double z[MOG_MAX_DIM];
        for (int r = 0; r < d; r++) z[r] = rng_normal1(seed, stream, base + 2 + (uint64_t)r);
        const MogComponent *mc = &m->comp[k];
        for (int r = 0; r < d; r++) {
            double s = mc->mean[r];
            for (int q = 0; q <= r; q++) s += mc->chol[r * d + q] * z[q];
            out[i * d + r] = (float)s;
        }
        if (comp_out) comp_out[i] = k;
    }
}

double mog_mahal2(const Mog *m, const float *x, int k) {
    MSD_CHECK(k >= 0 && k < m->ncomp);
    int d = m->dim;
    const MogComponent *mc = &m->comp[k];
    double y[MOG_MAX_DIM], q = 0;
    for (int i = 0; i < d; i++) {
        double s = (double)x[i] - mc->mean[i];
        for (int j = 0; j < i; j++) s -= mc->chol[i * d + j] * y[j];
        y[i] = s / mc->chol[i * d + i];
        q += y[i] * y[i];
    }
    return q;
}

void mog_coverage(const Mog *m, const float *x, const int32_t *cls, int64_t n, int only, MogCoverage *out) {
    MogCoverage s = {0};
    s.n = n;
    int64_t *hits = msd_calloc((size_t)m->ncomp, sizeof(int64_t));
    int64_t *per_class = msd_calloc((size_t)m->nclasses, sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        MSD_CHECK(cls[i] >= 0 && cls[i] < m->nclasses);
        per_class[cls[i]]++;
        int k = mog_assign(m, x + (size_t)i * (size_t)m->dim, cls[i]);
        if (mog_mahal2(m, x + (size_t)i * (size_t)m->dim, k) <= 9.0) {
            hits[k]++;
            s.on++;
        }
    }
    s.on_support = n ? (double)s.on / (double)n : 0;
    for (int c = 0; c < m->nclasses; c++) {
        if ((only >= 0 && c != only) || per_class[c] == 0) continue;
        for (int k = m->class_first[c]; k < m->class_first[c] + m->class_count[c]; k++) {
            s.ncomp++;
            if ((double)hits[k] >= 0.5 * m->comp[k].weight * (double)per_class[c]) s.covered++;
        }
    }
    s.coverage = s.ncomp ? (double)s.covered / s.ncomp : 0;
    free(hits);
    free(per_class);
    *out = s;
}

double mog_data_std(const Mog *m) {
    int d = m->dim;
    double mean[MOG_MAX_DIM] = {0}, second = 0;
    for (int k = 0; k < m->ncomp; k++) {
        const MogComponent *mc = &m->comp[k];
        double w = mc->weight / m->nclasses;
        for (int i = 0; i < d; i++) {
            mean[i] += w * mc->mean[i];
            second += w * (mc->cov[i * d + i] + mc->mean[i] * mc->mean[i]);
        }
    }
    double m2 = 0;
    for (int i = 0; i < d; i++) m2 += mean[i] * mean[i];
    return sqrt((second - m2) / d);
}

int mog_scatter_png(const char *path, const Mog *m, const float *gen, const int32_t *cls, int64_t n, uint64_t seed, char *err,
                    size_t errlen) {
    float *truth = msd_malloc(sizeof(float) * 2 * (size_t)n);
    mog_sample(m, truth, NULL, cls, n, seed, 2000, 0);
    float lo = 1e30f, hi = -1e30f;
    for (int64_t i = 0; i < 2 * n; i++) {
        float t = truth[i];
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    float pad = 0.1f * (hi - lo) + 0.5f;
    lo -= pad;
    hi += pad;
    const int W = 512;
    Canvas c = canvas_new(W, W, 255, 255, 255);
    for (int pass = 0; pass < 2; pass++) {
        const float *p = pass ? gen : truth;
        for (int64_t i = 0; i < n; i++) {
            float x = p[2 * i], y = p[2 * i + 1];
            if (!(x >= lo && x <= hi && y >= lo && y <= hi)) continue;
            int px = (int)((x - lo) / (hi - lo) * (W - 1)), py = (int)((hi - y) / (hi - lo) * (W - 1));
            uint8_t rgb[3] = {205, 205, 205};
            if (pass) palette_color(cls[i], rgb);
            canvas_dot(&c, px, py, 1, rgb[0], rgb[1], rgb[2]);
        }
    }
    int rc = png_write(path, c.rgb, W, W, 3, err, errlen);
    canvas_free(&c);
    free(truth);
    return rc;
}

