/* students.c: `msd-eval students`, the judge of a set of one-step students (docs/EVAL.md
 * "Judging students"): N images, image i of class i mod 10, each made by the student that owns
 * its class in the partition with one network call, G(z, c) = D(80 z; 80, c) on the student's
 * EMA weights, z keyed by (seed, i) as msd-sample keys its noise (so the teacher at NFE 1,
 * `--one-step TEACHER`, gives msd-sample --steps 1's images, and the result does not depend
 * on --batch); then FID and conditional accuracy per class, per student and overall, as one
 * JSON line on stdout and a table on stderr. Optionally the samples (--out), a grid with one
 * row per class (--grid), and the set exported for serving: weights only, the partition and
 * DIR/manifest.json (--export DIR --stage TEXT). --no-judge skips the scores (and with them the
 * classifier and the test set): the stage pipelines' final all-class grid.
 *
 * Refused: a partition whose K differs from the number of student files, a network whose
 * class count or image shape is not Fashion-MNIST's, a file that is not a one-step student
 * checkpoint (no "student.role" = "student" metadata, or another "student.index" than its
 * place), a student that makes a non-finite value. Not here: training (procs/student). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dmd.h"
#include "edmunet.h"
#include "eval.h"
#include "fid.h"
#include "fsutil.h"
#include "image.h"
#include "log.h"
#include "partition.h"
#include "philox.h"
#include "safetensors.h"
#include "sampler.h"

#define NCLS CLS_CLASSES
#define D_IMG (CLS_IN_H * CLS_IN_W)

typedef struct Student {
    char path[PATH_MAX];
    EdmUNet net;
    int open;
    char step[32];
    int64_t params;
    int64_t n;           /* images of its classes */
    double fid, acc;
} Student;

typedef struct Judge {
    const Opts *o;
    int K, one_step;
    int assign[NCLS];    /* class -> student */
    Student st[NCLS];
    int64_t N, nref;
    float *x;            /* (N, 784) as generated */
    int32_t *y, *pred;   /* (N) */
    int64_t cls_n[NCLS], hist[NCLS];
    double cls_fid[NCLS], cls_acc[NCLS], fid, acc, seconds;
    char classifier[PATH_MAX + 64];
} Judge;

static int is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

/* Open student i from path: a one-step student checkpoint (unless one_step), its EMA weights. */
static int student_open(Student *s, int i, const char *path, int one_step, const Backend *be, BackendCtx *ctx,
                        int64_t cap, char *err, size_t errlen) {
    snprintf(s->path, sizeof s->path, "%s", path);
    StFile f;
    if (st_read(&f, path, err, errlen)) return -1;
    const char *step = st_meta_get(&f, "msd.step");
    if (!step) step = st_meta_get(&f, "export.step");
    snprintf(s->step, sizeof s->step, "%s", step ? step : "unknown");
    if (!one_step) {
        const char *role = st_meta_get(&f, "student.role"), *idx = st_meta_get(&f, "student.index");
        const char *other = st_meta_get(&f, "teacher.role") ? " (a teacher checkpoint)"
                            : st_meta_get(&f, "critic.role") ? " (a critic checkpoint)"
                                                             : "";
        int bad = !role || strcmp(role, "student");
        if (bad) {
            st_free(&f);
            return msd_errf(err, errlen,
                            "%s is not a one-step student checkpoint%s: its metadata has no \"student.role\" = "
                            "\"student\" (stage 2 writes it; the teacher at NFE 1 is --one-step FILE)",
                            path, other);
        }
        if (idx && strtol(idx, NULL, 10) != i) {
            int was = (int)strtol(idx, NULL, 10);
            st_free(&f);
            return msd_errf(err, errlen,
                            "%s is student %d of its run (metadata \"student.index\"), but it stands as student %d "
                            "of the partition",
                            path, was, i);
        }
    }
    st_free(&f);
    if (edmunet_open(&s->net, path, NULL, be, ctx, cap, err, errlen)) return -1;
    s->open = 1;
    const UNetConfig *c = &s->net.cfg;
    if (c->label_dim != NCLS)
        return msd_errf(err, errlen,
                        "%s: the network %s has %d classes; the partition's are the %d of Fashion-MNIST", path,
                        s->net.spec, c->label_dim, NCLS);
    if (c->in_ch != 1 || c->res != CLS_IN_H)
        return msd_errf(err, errlen, "%s: the network %s makes %dx%dx%d images, not 1x28x28", path, s->net.spec,
                        c->in_ch, c->res, c->res);
    s->params = params_count(unet_params(s->net.unet));
    return 0;
}

/* The student files: --students DIR (DIR/student.S.safetensors, S < K, and no student.K) or
 * a comma list of exactly K files; or the --one-step file. */
static int open_students(Judge *j, const Backend *be, BackendCtx *ctx, int64_t cap) {
    const Opts *o = j->o;
    char err[2048], path[PATH_MAX];
    if (j->one_step) {
        if (student_open(&j->st[0], 0, o->one_step, 1, be, ctx, cap, err, sizeof err)) {
            log_error("--one-step: %s", err);
            return -1;
        }
        return 0;
    }
    char *list[NCLS + 1];
    int nfiles = 0;
    char *copy = NULL;
    if (is_dir(o->students)) {
        snprintf(path, sizeof path, "%s/student.%d.safetensors", o->students, j->K);
        if (access(path, F_OK) == 0) {
            log_error("--students %s holds %s, but the partition %s has %d students", o->students, path,
                      o->partition, j->K);
            return -1;
        }
    } else {
        copy = strdup(o->students);
        for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
            if (nfiles == NCLS + 1) break;
            list[nfiles++] = t;
        }
        if (nfiles != j->K) {
            log_error("--students: %d file%s for the %d students of the partition %s", nfiles, nfiles == 1 ? "" : "s",
                      j->K, o->partition);
            free(copy);
            return -1;
        }
    }
    int rc = 0;
    for (int s = 0; s < j->K && !rc; s++) {
        if (copy) snprintf(path, sizeof path, "%s", list[s]);
        else snprintf(path, sizeof path, "%s/student.%d.safetensors", o->students, s);
        if (student_open(&j->st[s], s, path, 0, be, ctx, cap, err, sizeof err)) {
            log_error("--students: student %d: %s", s, err);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

/* x[i] = G_owner(z_i, y_i) for every image i; one network call per image. */
static int generate(Judge *j, int64_t cap) {
    const int64_t N = j->N, D = D_IMG;
    float *zin = msd_malloc(sizeof(float) * (size_t)(cap * D)), *out = msd_malloc(sizeof(float) * (size_t)(cap * D));
    float *sig = msd_malloc(sizeof(float) * (size_t)cap);
    int32_t *lab = msd_malloc(sizeof(int32_t) * (size_t)cap);
    int64_t *idx = msd_malloc(sizeof(int64_t) * (size_t)N);
    int rc = 0;
    double t0 = msd_now();
    for (int s = 0; s < j->K && !rc; s++) {
        Student *st = &j->st[s];
        int64_t m = 0;
        for (int64_t i = 0; i < N; i++)
            if (j->assign[j->y[i]] == s) idx[m++] = i;
        st->n = m;
        SamplerEdm se;
        sampler_edm_init(&se, &st->net.edm);
        for (int64_t b = 0; b < m; b += cap) {
            int64_t c = m - b < cap ? m - b : cap;
            for (int64_t k = 0; k < c; k++) {
                int64_t i = idx[b + k];
                rng_normal_fill(zin + k * D, D, j->o->seed, EDMUNET_STREAM_SAMPLE, (uint64_t)i * (uint64_t)D);
                for (int64_t q = 0; q < D; q++) zin[k * D + q] *= DMD_SIGMA_GEN;
                sig[k] = DMD_SIGMA_GEN;
                lab[k] = j->y[i];
            }
            sampler_edm_denoise(&se, out, zin, sig, lab, c);
            for (int64_t k = 0; k < c && !rc; k++) {
                int64_t i = idx[b + k];
                for (int64_t q = 0; q < D; q++)
                    if (!isfinite(out[k * D + q])) {
                        log_error("student %d (%s) made a non-finite value in image %lld (class %d)", s, st->path,
                                  (long long)i, j->y[i]);
                        rc = -1;
                        break;
                    }
                memcpy(j->x + i * D, out + k * D, sizeof(float) * (size_t)D);
            }
            if (rc) break;
        }
        sampler_edm_free(&se);
        log_info("student %d: %lld images in %.1f s", s, (long long)m, msd_now() - t0);
    }
    j->seconds = msd_now() - t0;
    free(zin);
    free(out);
    free(sig);
    free(lab);
    free(idx);
    return rc;
}

/* FID between the rows of fg whose label passes want (labels yg) and the rows of fr likewise;
 * NAN when either side has fewer than 2. */
static double fid_where(const float *fg, const int32_t *yg, int64_t ng, const float *fr, const int32_t *yr,
                        int64_t nr, const unsigned char *want, int64_t *count) {
    float *a = msd_malloc(sizeof(float) * (size_t)(ng * CLS_FEATURES)), *b = msd_malloc(sizeof(float) * (size_t)(nr * CLS_FEATURES));
    int64_t na = 0, nb = 0;
    for (int64_t i = 0; i < ng; i++)
        if (want[yg[i]]) memcpy(a + na++ * CLS_FEATURES, fg + i * CLS_FEATURES, sizeof(float) * CLS_FEATURES);
    for (int64_t i = 0; i < nr; i++)
        if (want[yr[i]]) memcpy(b + nb++ * CLS_FEATURES, fr + i * CLS_FEATURES, sizeof(float) * CLS_FEATURES);
    double f = NAN;
    if (na >= 2 && nb >= 2) {
        FidStats sa, sb;
        fid_stats_compute(&sa, a, na, CLS_FEATURES);
        fid_stats_compute(&sb, b, nb, CLS_FEATURES);
        f = fid_frechet(&sa, &sb);
        fid_stats_free(&sa);
        fid_stats_free(&sb);
    }
    free(a);
    free(b);
    if (count) *count = na;
    return f;
}

static int judge_scores(Judge *j) {
    const Opts *o = j->o;
    Dataset test;
    if (load_split(o, "test", &test)) return -1;
    if (o->ref_n && o->ref_n < test.n) test.n = o->ref_n;
    j->nref = test.n;
    Engine e;
    if (engine_open(&e, o, 1, 250)) {
        dataset_free(&test);
        return -1;
    }
    const int64_t N = j->N;
    float *xc = msd_malloc(sizeof(float) * (size_t)(N * D_IMG));
    for (int64_t k = 0; k < N * D_IMG; k++) xc[k] = j->x[k] < -1.0f ? -1.0f : j->x[k] > 1.0f ? 1.0f : j->x[k];
    float *fr = msd_malloc(sizeof(float) * (size_t)(test.n * CLS_FEATURES));
    float *fg = msd_malloc(sizeof(float) * (size_t)(N * CLS_FEATURES));
    classifier_run(e.net, test.x, test.n, fr, NULL);
    classifier_run(e.net, xc, N, fg, j->pred);
    unsigned char want[NCLS];
    memset(want, 1, sizeof want);
    j->fid = fid_where(fg, j->y, N, fr, test.y, test.n, want, NULL);
    int64_t ok = 0, okc[NCLS] = {0};
    for (int64_t i = 0; i < N; i++) {
        j->hist[j->pred[i]]++;
        if (j->pred[i] == j->y[i]) { ok++; okc[j->y[i]]++; }
    }
    j->acc = (double)ok / (double)N;
    for (int c = 0; c < NCLS; c++) {
        memset(want, 0, sizeof want);
        want[c] = 1;
        j->cls_fid[c] = fid_where(fg, j->y, N, fr, test.y, test.n, want, &j->cls_n[c]);
        j->cls_acc[c] = j->cls_n[c] ? (double)okc[c] / (double)j->cls_n[c] : NAN;
    }
    for (int s = 0; s < j->K; s++) {
        int64_t oks = 0, n = 0;
        for (int c = 0; c < NCLS; c++) {
            want[c] = j->assign[c] == s;
            if (want[c]) { oks += okc[c]; n += j->cls_n[c]; }
        }
        j->st[s].fid = fid_where(fg, j->y, N, fr, test.y, test.n, want, NULL);
        j->st[s].acc = n ? (double)oks / (double)n : NAN;
    }
    free(xc);
    free(fr);
    free(fg);
    engine_close(&e);
    dataset_free(&test);
    return 0;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v, const char *fmt) {
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}

/* Everything as one JSON object; sep joins the top-level members (", " for a line, ",\n  "
 * for the manifest). files (may be NULL) replace the student paths. */
static void judge_json(FILE *f, const Judge *j, const char *sep, const char *const *files, const char *extra) {
    const Opts *o = j->o;
    fprintf(f, "{");
    if (extra) fprintf(f, "%s%s", extra, sep);
    fprintf(f, "\"generator\": \"%s\"%s\"partition\": ", j->one_step ? "one-step" : "students", sep);
    if (o->partition) json_str(f, o->partition);
    else fputs("null", f);
    fprintf(f, "%s\"K\": %d%s\"students\": [", sep, j->K, sep);
    for (int s = 0; s < j->K; s++) {
        const Student *st = &j->st[s];
        fprintf(f, "%s{\"student\": %d, \"file\": ", s ? ", " : "", s);
        json_str(f, files ? files[s] : st->path);
        if (files) {
            fprintf(f, ", \"source\": ");
            json_str(f, st->path);
        }
        fprintf(f, ", \"net\": ");
        json_str(f, st->net.spec);
        fprintf(f, ", \"params\": %lld, \"step\": ", (long long)st->params);
        json_str(f, st->step);
        fprintf(f, ", \"classes\": [");
        int first = 1;
        for (int c = 0; c < NCLS; c++)
            if (j->assign[c] == s) { fprintf(f, "%s%d", first ? "" : ", ", c); first = 0; }
        fprintf(f, "], \"n\": %lld, \"fid\": ", (long long)st->n);
        json_num(f, st->fid, "%.4f");
        fprintf(f, ", \"cond_acc\": ");
        json_num(f, st->acc, "%.5f");
        fprintf(f, "}");
    }
    fprintf(f, "]%s\"n\": %lld%s\"seed\": %llu%s\"nfe\": 1%s\"n_ref\": %lld%s\"classifier\": ", sep, (long long)j->N,
            sep, (unsigned long long)o->seed, sep, sep, (long long)j->nref, sep);
    json_str(f, j->classifier);
    fprintf(f, "%s\"fid\": %.4f%s\"cond_acc\": %.5f%s\"per_class\": [", sep, j->fid, sep, j->acc, sep);
    for (int c = 0; c < NCLS; c++) {
        fprintf(f, "%s{\"class\": %d, \"name\": \"%s\", \"student\": %d, \"n\": %lld, \"fid\": ", c ? ", " : "", c,
                dataset_fmnist_names[c], j->assign[c], (long long)j->cls_n[c]);
        json_num(f, j->cls_fid[c], "%.4f");
        fprintf(f, ", \"cond_acc\": ");
        json_num(f, j->cls_acc[c], "%.5f");
        fprintf(f, "}");
    }
    fprintf(f, "]%s\"predicted_histogram\": [", sep);
    for (int c = 0; c < NCLS; c++) fprintf(f, "%s%lld", c ? ", " : "", (long long)j->hist[c]);
    fprintf(f, "]%s\"seconds\": %.2f%s\"images_per_s\": %.2f}\n", sep, j->seconds, sep,
            (double)j->N / (j->seconds > 0 ? j->seconds : 1e-9));
}

static void judge_table(const Judge *j) {
    fprintf(stderr, "%-3s %-9s %7s %7s %9s %9s\n", "", "class", "student", "n", "FID", "cond.acc");
    for (int c = 0; c < NCLS; c++)
        fprintf(stderr, "%-3d %-9s %7d %7lld %9.3f %9.4f\n", c, dataset_fmnist_names[c], j->assign[c],
                (long long)j->cls_n[c], j->cls_fid[c], j->cls_acc[c]);
    for (int s = 0; s < j->K; s++)
        fprintf(stderr, "%-13s %7d %7lld %9.3f %9.4f  %s (%s, step %s)\n", "student", s, (long long)j->st[s].n,
                j->st[s].fid, j->st[s].acc, j->st[s].path, j->st[s].net.spec, j->st[s].step);
    fprintf(stderr, "%-13s %7s %7lld %9.3f %9.4f  (reference: %lld test images; FID per class against that class's)\n",
            "all", "", (long long)j->N, j->fid, j->acc, (long long)j->nref);
}

static int write_outputs(const Judge *j) {
    const Opts *o = j->o;
    char err[2048];
    if (o->out) {
        int64_t xs[4] = {j->N, 1, CLS_IN_H, CLS_IN_W}, ys[1] = {j->N};
        StWriteTensor t[2] = {{"images", ST_F32, 4, xs, j->x}, {"labels", ST_I32, 1, ys, j->y}};
        StMeta meta[2] = {{"format", "msdpipe-samples-1"}, {"generator", j->one_step ? "one-step" : "students"}};
        if (fs_mkdir_parent(o->out, err, sizeof err) || st_write(o->out, t, 2, meta, 2, err, sizeof err)) {
            log_error("--out: %s", err);
            return -1;
        }
    }
    if (o->grid) {
        /* one row per class: class c's first `per` images are c, c + 10, c + 20, ... */
        int64_t per = j->N / NCLS < 10 ? j->N / NCLS : 10;
        float *g = msd_malloc(sizeof(float) * (size_t)(NCLS * per * D_IMG));
        for (int c = 0; c < NCLS; c++)
            for (int64_t k = 0; k < per; k++)
                memcpy(g + (c * per + k) * D_IMG, j->x + (c + NCLS * k) * D_IMG, sizeof(float) * D_IMG);
        int r = fs_mkdir_parent(o->grid, err, sizeof err) ||
                image_write_grid(o->grid, g, NCLS * per, 1, CLS_IN_H, CLS_IN_W, (int)per, err, sizeof err);
        free(g);
        if (r) {
            log_error("--grid: %s", err);
            return -1;
        }
    }
    return 0;
}

/* --export DIR: DIR/student.S.safetensors (EMA weights only, spec and student metadata),
 * DIR/partition.txt and DIR/manifest.json (written last, atomically). */
static int export_set(const Judge *j) {
    const Opts *o = j->o;
    char err[2048], path[PATH_MAX + 64], tmp[PATH_MAX + 96];
    if (fs_mkdir_p(o->export_dir, err, sizeof err)) {
        log_error("--export: %s", err);
        return -1;
    }
    char names[NCLS][32];
    const char *files[NCLS];
    for (int s = 0; s < j->K; s++) {
        snprintf(names[s], sizeof names[s], "student.%d.safetensors", s);
        files[s] = names[s];
        snprintf(path, sizeof path, "%s/%s", o->export_dir, names[s]);
        char idx[16];
        snprintf(idx, sizeof idx, "%d", s);
        StMeta meta[5] = {{"student.role", "student"}, {"student.index", idx}, {"export.step", (char *)j->st[s].step},
                          {"export.source", (char *)j->st[s].path}, {"export.stage", (char *)o->stage}};
        if (edmunet_save(&j->st[s].net, path, meta, 5, err, sizeof err)) {
            log_error("--export: %s", err);
            return -1;
        }
    }
    snprintf(path, sizeof path, "%s/partition.txt", o->export_dir);
    if (partition_write(path, j->assign, NCLS, j->K, dataset_fmnist_names, err, sizeof err)) {
        log_error("--export: %s", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/manifest.json", o->export_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        log_error("--export: %s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\"format\": \"msdpipe-student-set-1\",\n  \"stage\": ");
    json_str(f, o->stage);
    fprintf(f, ",\n  \"date\": \"%s\",\n  \"command\": ", date);
    char cmd[8192] = "";
    size_t used = 0;
    for (int a = 0; a < o->argc && used < sizeof cmd - 1; a++)
        used += (size_t)snprintf(cmd + used, sizeof cmd - used, "%s%s", a ? " " : "", o->argv[a]);
    json_str(f, cmd);
    fprintf(f, ",\n  \"partition_file\": \"partition.txt\",\n  ");
    /* the rest: the judge's object without its opening brace */
    char *body = NULL;
    size_t blen = 0;
    FILE *bf = open_memstream(&body, &blen);
    judge_json(bf, j, ",\n  ", files, NULL);
    fclose(bf);
    fputs(body + 1, f);
    free(body);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        log_error("--export: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    log_info("exported %d students, %s/partition.txt and %s", j->K, o->export_dir, path);
    return 0;
}

int cmd_students(const Opts *o) {
    if (!o->one_step == !(o->partition && o->students))
        return msd_fail(2, "students needs --partition FILE and --students DIR|F,F,... (a student set) or "
                           "--one-step CKPT (one generator for every class), not both");
    if (o->one_step && (o->partition || o->students))
        return msd_fail(2, "students: --one-step CKPT takes no --partition or --students");
    if (o->export_dir && (!o->stage || o->one_step))
        return msd_fail(2, "students --export DIR needs a student set and --stage TEXT (the training stage to record)");
    if (o->out && !ends_with(o->out, ".safetensors")) return msd_fail(2, "students --out %s: expected FILE.safetensors", o->out);
    if (o->no_judge && !o->grid && !o->out)
        return msd_fail(2, "students --no-judge makes images only for --grid FILE.png or --out FILE.safetensors: give one");
    if (o->no_judge && o->export_dir)
        return msd_fail(2, "students --export records the set's scores in its manifest: it cannot go with --no-judge");
    Judge j;
    memset(&j, 0, sizeof j);
    j.o = o;
    j.one_step = o->one_step != NULL;
    j.N = o->n ? o->n : 10000;
    if (j.N < 2 * NCLS) return msd_fail(2, "students --n %lld: need at least %d (2 images per class)", (long long)j.N, 2 * NCLS);
    char err[2048];
    if (j.one_step) {
        j.K = 1;
    } else {
        PartitionNames lk = {NCLS, dataset_fmnist_names};
        if (partition_read_checked(o->partition, j.assign, NCLS, 0, dataset_fmnist_names, &j.K, partition_lookup_names,
                                   &lk, err, sizeof err))
            return msd_fail(1, "--partition: %s (the classes are the %d of Fashion-MNIST)", err, NCLS);
    }
    Device dev = device_cpu();
    if (o->gpu >= 0) { dev.type = DEVICE_CUDA; dev.index = o->gpu; }
    const Backend *be = backend_get(dev, err, sizeof err);
    if (!be || backend_missing(be, err, sizeof err)) return msd_fail(1, "%s", err);
    BackendCtx *ctx = backend_ctx_new(be, o->threads);
    int64_t cap = o->batch ? o->batch : 100;
    if (cap > j.N) cap = j.N;
    int rc = 1;
    if (open_students(&j, be, ctx, cap)) goto out;
    {
        char buf[PATH_MAX + 64];
        snprintf(j.classifier, sizeof j.classifier, "%s", classifier_path(o, buf, sizeof buf));
    }
    j.x = msd_malloc(sizeof(float) * (size_t)(j.N * D_IMG));
    j.y = msd_malloc(sizeof(int32_t) * (size_t)j.N);
    j.pred = msd_malloc(sizeof(int32_t) * (size_t)j.N);
    for (int64_t i = 0; i < j.N; i++) j.y[i] = (int32_t)(i % NCLS);
    log_info("%lld images (class i mod %d) from %d %s, one network call each, seed %llu", (long long)j.N, NCLS, j.K,
             j.one_step ? "one-step generator" : (j.K == 1 ? "student" : "students"), (unsigned long long)o->seed);
    if (generate(&j, cap)) goto out;
    if (!o->no_judge) {
        if (judge_scores(&j)) goto out;
        judge_json(stdout, &j, ", ", NULL, NULL);
        fflush(stdout);
        judge_table(&j);
    }
    if (write_outputs(&j)) goto out;
    if (o->no_judge && o->grid)
        log_info("grid %s: one row per class, %lld images each, every class from its owner (%.1f s)", o->grid,
                 (long long)(j.N / NCLS < 10 ? j.N / NCLS : 10), j.seconds);
    if (o->export_dir && export_set(&j)) goto out;
    rc = 0;
out:
    for (int s = 0; s < NCLS; s++)
        if (j.st[s].open) edmunet_free(&j.st[s].net);
    free(j.x);
    free(j.y);
    free(j.pred);
    backend_ctx_destroy(&ctx);
    return rc;
}
