/* dataset.c: see dataset.h. */
#include "dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "idx.h"
#include "image.h"
#include "log.h"
#include "philox.h"

const char *const dataset_fmnist_names[DATASET_FMNIST_CLASSES] = {
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"};

void dataset_free(Dataset *d) {
    if (!d) return;
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

static void dataset_set_classes(Dataset *d) {
    int32_t mx = -1;
    for (int64_t i = 0; i < d->n; i++)
        if (d->y[i] > mx) mx = d->y[i];
    d->nclasses = mx + 1;
}

int dataset_load_idx(Dataset *d, const char *images_path, const char *labels_path, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    int rows, cols;
    if (idx_read_pair(images_path, labels_path, &d->x, &d->y, &d->n, &rows, &cols, err, errlen)) return -1;
    d->c = 1;
    d->h = rows;
    d->w = cols;
    dataset_set_classes(d);
    snprintf(d->source, sizeof d->source, "idx:%.240s", images_path);
    return 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* DIR/NAME.gz if it exists, else DIR/NAME (whose absence the reader then reports). */
static void fmnist_path(char *out, size_t len, const char *dir, const char *name) {
    snprintf(out, len, "%s/%s.gz", dir, name);
    if (!file_exists(out)) snprintf(out, len, "%s/%s", dir, name);
}

static int load_fmnist(Dataset *d, const char *dir, const char *split, char *err, size_t errlen) {
    const char *pre;
    if (!strcmp(split, "train")) pre = "train";
    else if (!strcmp(split, "test")) pre = "t10k";
    else return msd_errf(err, errlen, "dataset fmnist: split '%s' is neither 'train' nor 'test'", split);
    char img[4096], lab[4096], name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", pre);
    fmnist_path(img, sizeof img, dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre);
    fmnist_path(lab, sizeof lab, dir, name);
    if (!file_exists(img) && !file_exists(lab))
        return msd_errf(err, errlen,
                        "Fashion-MNIST not found in %s (install the Debian package dataset-fashion-mnist, or "
                        "point MSD_FMNIST_DIR at a folder with the IDX files)", dir);
    if (dataset_load_idx(d, img, lab, err, errlen)) return -1;
    snprintf(d->source, sizeof d->source, "fmnist:%.200s:%.8s", dir, split);
    return 0;
}

int dataset_load(Dataset *d, const char *spec, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    if (!spec) return msd_errf(err, errlen, "dataset: no source given");
    if (!strncmp(spec, "fmnist:", 7)) {
        const char *rest = spec + 7, *colon = strrchr(rest, ':');
        if (!colon) {
            const char *dir = getenv("MSD_FMNIST_DIR");
            return load_fmnist(d, dir && *dir ? dir : DATASET_FMNIST_DIR, rest, err, errlen);
        }
        char dir[4096];
        if ((size_t)(colon - rest) >= sizeof dir) return msd_errf(err, errlen, "dataset '%s': path too long", spec);
        memcpy(dir, rest, (size_t)(colon - rest));
        dir[colon - rest] = 0;
        return load_fmnist(d, dir, colon + 1, err, errlen);
    }
    if (!strncmp(spec, "idx:", 4)) {
        const char *comma = strchr(spec + 4, ',');
        if (!comma || comma == spec + 4 || !comma[1])
            return msd_errf(err, errlen, "dataset '%s': expected idx:IMAGES,LABELS", spec);
        char img[4096];
        if ((size_t)(comma - spec - 4) >= sizeof img) return msd_errf(err, errlen, "dataset '%s': path too long", spec);
        memcpy(img, spec + 4, (size_t)(comma - spec - 4));
        img[comma - spec - 4] = 0;
        return dataset_load_idx(d, img, comma + 1, err, errlen);
    }
    if (!strncmp(spec, "png:", 4)) return dataset_load_png(d, spec + 4, 0, err, errlen);
    return msd_errf(err, errlen, "dataset '%s': unknown source (fmnist:train, fmnist:test, fmnist:DIR:SPLIT, "
                                 "idx:IMAGES,LABELS, png:FOLDER)", spec);
}

/* ---- PNG folders ---- */

typedef struct NameList {
    int n, cap;
    char **v;
} NameList;

static void names_push(NameList *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, sizeof(char *) * (size_t)l->cap);
        if (!l->v) msd_die("out of memory listing a folder");
    }
    l->v[l->n++] = msd_strdup(s);
}

static void names_free(NameList *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with_png(const char *s) {
    size_t n = strlen(s);
    return n > 4 && !strcmp(s + n - 4, ".png");
}

/* Class folder name: decimal digits only, no leading zero (except "0"), < DATASET_MAX_CLASSES. */
static int class_of_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 4 || (n > 1 && s[0] == '0')) return -1;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return -1;
    int v = atoi(s);
    return v < DATASET_MAX_CLASSES ? v : -1;
}

/* List dir's visible entries, sorted; *total counts against DATASET_MAX_IMAGES. */
static int list_dir(const char *dir, NameList *out, int64_t *total, char *err, size_t errlen) {
    DIR *dp = opendir(dir);
    if (!dp) return msd_errf(err, errlen, "%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (++*total > DATASET_MAX_IMAGES) {
            closedir(dp);
            return msd_errf(err, errlen, "%s: more than %d entries", dir, DATASET_MAX_IMAGES);
        }
        names_push(out, e->d_name);
    }
    closedir(dp);
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return 0;
}

typedef struct PngAcc {
    Dataset *d;
    int64_t cap;       /* images x and y have room for */
    int channels;      /* requested (0: first image decides) */
} PngAcc;

static int add_png(PngAcc *a, const char *path, int32_t label, char *err, size_t errlen) {
    Dataset *d = a->d;
    uint8_t *pix;
    int w, h, ch;
    if (png_read(path, &pix, &w, &h, d->n ? d->c : a->channels, &ch, DATASET_MAX_SIDE, err, errlen)) return -1;
    if (d->n == 0) {
        d->c = ch;
        d->h = h;
        d->w = w;
    } else if (w != d->w || h != d->h) {
        free(pix);
        return msd_errf(err, errlen, "%s: image is %dx%d, but the images before it are %dx%d", path, w, h, d->w,
                        d->h);
    }
    size_t per = (size_t)d->c * (size_t)h * (size_t)w, hw = (size_t)h * (size_t)w;
    if (d->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        d->x = realloc(d->x, sizeof(float) * per * (size_t)a->cap);
        d->y = realloc(d->y, sizeof(int32_t) * (size_t)a->cap);
        if (!d->x || !d->y) msd_die("%s: out of memory for %lld images", path, (long long)a->cap);
    }
    float *dst = d->x + per * (size_t)d->n;
    for (size_t p = 0; p < hw; p++)
        for (int c = 0; c < d->c; c++) dst[(size_t)c * hw + p] = (float)pix[p * (size_t)d->c + (size_t)c] / 127.5f - 1.0f;
    d->y[d->n++] = label;
    free(pix);
    return 0;
}

int dataset_load_png(Dataset *d, const char *folder, int channels, char *err, size_t errlen) {
    MSD_CHECK(channels == 0 || channels == 1 || channels == 3);
    memset(d, 0, sizeof *d);
    NameList top = {0};
    int64_t total = 0;
    int rc = -1;
    char path[4096];
    PngAcc acc = {d, 0, channels};
    if (list_dir(folder, &top, &total, err, errlen)) goto done;
    int nclassdirs = 0, nfiles = 0;
    for (int i = 0; i < top.n; i++) {
        if (snprintf(path, sizeof path, "%s/%s", folder, top.v[i]) >= (int)sizeof path) {
            msd_errf(err, errlen, "%s/%s: path too long", folder, top.v[i]);
            goto done;
        }
        struct stat st;
        if (stat(path, &st) != 0) {
            msd_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
            goto done;
        }
        if (S_ISDIR(st.st_mode) && class_of_name(top.v[i]) >= 0) nclassdirs++;
        else if (S_ISREG(st.st_mode) && ends_with_png(top.v[i])) nfiles++;
        else {
            msd_errf(err, errlen, "%s: neither a class folder (0..%d) nor a .png file", path, DATASET_MAX_CLASSES - 1);
            goto done;
        }
    }
    if (nclassdirs && nfiles) {
        msd_errf(err, errlen, "%s: holds both class folders and .png files; use FOLDER/<class>/*.png or FOLDER/*.png",
                 folder);
        goto done;
    }
    if (nfiles) {
        for (int i = 0; i < top.n; i++) {
            snprintf(path, sizeof path, "%s/%s", folder, top.v[i]);
            if (add_png(&acc, path, -1, err, errlen)) goto done;
        }
    } else {
        /* class folders in numeric order */
        int32_t *cls = msd_malloc(sizeof(int32_t) * (size_t)(top.n ? top.n : 1));
        for (int i = 0; i < top.n; i++) cls[i] = class_of_name(top.v[i]);
        for (int done_cls = 0; done_cls < top.n; done_cls++) {
            int best = -1;
            for (int i = 0; i < top.n; i++)
                if (cls[i] >= 0 && (best < 0 || cls[i] < cls[best])) best = i;
            int32_t label = cls[best];
            cls[best] = -1;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", folder, top.v[best]);
            NameList files = {0};
            if (list_dir(sub, &files, &total, err, errlen)) {
                free(cls);
                goto done;
            }
            for (int j = 0; j < files.n; j++) {
                if (snprintf(path, sizeof path, "%s/%s", sub, files.v[j]) >= (int)sizeof path || !ends_with_png(files.v[j])) {
                    msd_errf(err, errlen, "%s/%s: not a .png file", sub, files.v[j]);
                    names_free(&files);
                    free(cls);
                    goto done;
                }
                if (add_png(&acc, path, label, err, errlen)) {
                    names_free(&files);
                    free(cls);
                    goto done;
                }
            }
            names_free(&files);
        }
        free(cls);
    }
    if (d->n == 0) {
        msd_errf(err, errlen, "%s: no .png images (layout: FOLDER/<class>/*.png or FOLDER/*.png)", folder);
        goto done;
    }
    dataset_set_classes(d);
    snprintf(d->source, sizeof d->source, "png:%.240s", folder);
    rc = 0;
done:
    names_free(&top);
    if (rc) dataset_free(d);
    return rc;
}

/* ---- classes ---- */

int64_t dataset_filter(Dataset *d, const int32_t *classes, int ncls, char *err, size_t errlen) {
    size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    int64_t k = 0;
    for (int64_t i = 0; i < d->n; i++) {
        int keep = 0;
        for (int j = 0; j < ncls && !keep; j++) keep = d->y[i] == classes[j];
        if (!keep) continue;
        if (k != i) {
            memmove(d->x + per * (size_t)k, d->x + per * (size_t)i, sizeof(float) * per);
            d->y[k] = d->y[i];
        }
        k++;
    }
    if (k == 0) {
        char list[256] = "";
        size_t off = 0;
        for (int j = 0; j < ncls && off < sizeof list - 16; j++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", j ? "," : "", classes[j]);
        return msd_errf(err, errlen, "%s: no images of classes {%s}", d->source, list);
    }
    d->n = k;
    return k;
}

int dataset_parse_classes(const char *s, int32_t *classes, int max, char *err, size_t errlen) {
    int n = 0;
    const char *p = s;
    if (!s || !*s) return msd_errf(err, errlen, "empty class list");
    while (*p) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10), b;
        if (end == p || errno || !isdigit((unsigned char)*p)) return msd_errf(err, errlen, "class list '%s': bad number at '%s'", s, p);
        b = a;
        p = end;
        if (*p == '-') {
            const char *q = p + 1;
            b = strtol(q, &end, 10);
            if (end == q || !isdigit((unsigned char)*q)) return msd_errf(err, errlen, "class list '%s': bad range end at '%s'", s, q);
            p = end;
        }
        if (a < 0 || b >= DATASET_MAX_CLASSES || a > b)
            return msd_errf(err, errlen, "class list '%s': %ld-%ld is not a range within 0..%d", s, a, b, DATASET_MAX_CLASSES - 1);
        for (long c = a; c <= b; c++) {
            for (int j = 0; j < n; j++)
                if (classes[j] == c) return msd_errf(err, errlen, "class list '%s': class %ld twice", s, c);
            if (n == max) return msd_errf(err, errlen, "class list '%s': more than %d classes", s, max);
            classes[n++] = (int32_t)c;
        }
        if (*p == ',') p++;
        else if (*p) return msd_errf(err, errlen, "class list '%s': unexpected '%c'", s, *p);
    }
    return n;
}

void dataset_histogram(const Dataset *d, int64_t *hist, int nclasses) {
    for (int c = 0; c < nclasses; c++) hist[c] = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (d->y[i] >= 0 && d->y[i] < nclasses) hist[d->y[i]]++;
}

/* ---- batches ---- */

void dataset_batcher_init(DatasetBatcher *b, const Dataset *d, uint64_t seed, int64_t batch) {
    MSD_CHECK(d && d->n > 0 && d->n <= INT32_MAX && batch > 0);
    memset(b, 0, sizeof *b);
    b->d = d;
    b->seed = seed;
    b->batch = batch;
    for (int s = 0; s < 2; s++) {
        b->perm[s] = msd_malloc(sizeof(int32_t) * (size_t)d->n);
        b->epoch[s] = -1;
    }
}

void dataset_batcher_free(DatasetBatcher *b) {
    if (!b) return;
    free(b->perm[0]);
    free(b->perm[1]);
    memset(b, 0, sizeof *b);
}

int64_t dataset_batch_index(DatasetBatcher *b, int64_t k) {
    MSD_CHECK(k >= 0);
    int64_t n = b->d->n, e = k / n;
    int s = (int)(e & 1);
    if (b->epoch[s] != e) {
        rng_permutation(b->perm[s], n, b->seed, DATASET_STREAM_PERM + (uint64_t)e);
        b->epoch[s] = e;
    }
    return b->perm[s][k % n];
}

void dataset_batch(DatasetBatcher *b, int64_t step, float *x, int32_t *y) {
    MSD_CHECK(step >= 0 && step <= INT64_MAX / b->batch - 1);
    const Dataset *d = b->d;
    size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    for (int64_t j = 0; j < b->batch; j++) {
        int64_t i = dataset_batch_index(b, step * b->batch + j);
        memcpy(x + per * (size_t)j, d->x + per * (size_t)i, sizeof(float) * per);
        if (y) y[j] = d->y[i];
    }
}
