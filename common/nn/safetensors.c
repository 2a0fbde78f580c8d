/* safetensors.c: the safetensors reader and atomic writer; see safetensors.h for the format and
 * what is checked. The strict JSON reader (json.c) builds a small tree of the header (its size
 * bounded by the header, itself bounded by the file), then the tree is checked against the
 * schema here. */
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "log.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* the Python library's limit */
#define JSON_MAX_DEPTH 3                      /* root object > tensor object > shape array */

static const char *const dtype_names[ST_NDTYPES] = {"F32", "F16", "BF16", "F64", "I64",
                                                    "I32", "I16", "I8",   "U8",  "BOOL"};
static const size_t dtype_sizes[ST_NDTYPES] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

size_t st_dtype_size(StDtype d) { return (unsigned)d < ST_NDTYPES ? dtype_sizes[d] : 0; }

/* A name and where it came from, so sorting needs no global context (thread-safe). */
typedef struct NameIdx {
    const char *s;
    int i;
} NameIdx;
static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(((const NameIdx *)a)->s, ((const NameIdx *)b)->s);
}
/* The n names sorted by byte order: a malloc'd array (at least one element; caller frees). */
static NameIdx *sorted_names(int n, const char *(*name_of)(const void *, int), const void *ctx) {
    NameIdx *v = msd_malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int i = 0; i < n; i++) v[i] = (NameIdx){name_of(ctx, i), i};
    qsort(v, (size_t)(n > 0 ? n : 0), sizeof *v, cmp_name_idx);
    return v;
}
static const char *jkey_of(const void *ctx, int i) { return ((const JsonValue *)ctx)->keys[i]; }
static const char *tensor_name_of(const void *ctx, int i) { return ((const StTensor *)ctx)[i].name; }
static const char *wt_name_of(const void *ctx, int i) { return ((const StWriteTensor *)ctx)[i].name; }
static const char *meta_key_of(const void *ctx, int i) { return ((const StMeta *)ctx)[i].key; }

/* ==== header schema ===================================================================== */

static const StDtype *dtype_parse(const char *s) {
    static const StDtype all[ST_NDTYPES] = {ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64,
                                            ST_I32, ST_I16, ST_I8,   ST_U8,  ST_BOOL};
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, dtype_names[i]) == 0) return &all[i];
    return NULL;
}

void st_free(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) { free(f->meta[i].key); free(f->meta[i].value); }
    free(f->t);
    free(f->meta);
    free(f->buf);
    free(f->by_name);
    memset(f, 0, sizeof *f);
}

static int cmp_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* One tensor entry (key name, value v) into t; data section has dlen bytes. */
static int tensor_entry(const char *label, const char *name, const JsonValue *v, uint64_t dlen, StTensor *t, char *err,
                        size_t errlen) {
    if (v->type != JSON_OBJ) return msd_errf(err, errlen, "%s: tensor '%s': entry is not an object", label, name);
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") && strcmp(v->keys[i], "data_offsets"))
            return msd_errf(err, errlen, "%s: tensor '%s': unknown field '%s'", label, name, v->keys[i]);
    int id = json_get(v, "dtype"), is = json_get(v, "shape"), io = json_get(v, "data_offsets");
    if (id < 0 || is < 0 || io < 0)
        return msd_errf(err, errlen, "%s: tensor '%s': missing field '%s'", label, name,
                        id < 0 ? "dtype" : is < 0 ? "shape" : "data_offsets");
    const JsonValue *jd = &v->items[id], *js = &v->items[is], *jo = &v->items[io];
    if (jd->type != JSON_STR) return msd_errf(err, errlen, "%s: tensor '%s': dtype is not a string", label, name);
    const StDtype *dt = dtype_parse(jd->s);
    if (!dt) return msd_errf(err, errlen, "%s: tensor '%s': unknown dtype '%s'", label, name, jd->s);
    t->dtype = *dt;
    if (js->type != JSON_ARR) return msd_errf(err, errlen, "%s: tensor '%s': shape is not an array", label, name);
    if (js->n > TENSOR_MAX_DIMS)
        return msd_errf(err, errlen, "%s: tensor '%s': %d dimensions, at most %d supported", label, name, js->n,
                        TENSOR_MAX_DIMS);
    t->ndim = js->n;
    uint64_t numel = 1;
    int ovf = 0;
    for (int k = 0; k < js->n; k++) {
        const JsonValue *d = &js->items[k];
        if (d->type != JSON_NUM || !d->is_uint || d->u > (uint64_t)INT64_MAX)
            return msd_errf(err, errlen, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, name, k);
        t->shape[k] = (int64_t)d->u;
        if (__builtin_mul_overflow(numel, d->u, &numel)) ovf = 1;
    }
    uint64_t nbytes;
    if (ovf || numel > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, (uint64_t)dtype_sizes[t->dtype], &nbytes))
        return msd_errf(err, errlen, "%s: tensor '%s': shape too large (element count overflows)", label, name);
    t->numel = (int64_t)numel;
    if (jo->type != JSON_ARR || jo->n != 2 || jo->items[0].type != JSON_NUM || !jo->items[0].is_uint ||
        jo->items[1].type != JSON_NUM || !jo->items[1].is_uint)
        return msd_errf(err, errlen, "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                        label, name);
    t->begin = jo->items[0].u;
    t->end = jo->items[1].u;
    if (t->begin > t->end)
        return msd_errf(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin",
                        label, name, t->begin, t->end);
    if (t->end > dlen)
        return msd_errf(err, errlen,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] out of range (data section has %"
                        PRIu64 " bytes)", label, name, t->begin, t->end, dlen);
    if (t->end - t->begin != nbytes) {
        char sb[160];
        return msd_errf(err, errlen,
                        "%s: tensor '%s': shape %s of %s needs %" PRIu64 " bytes, data_offsets span %" PRIu64,
                        label, name, shape_str(t->ndim, t->shape, sb, sizeof sb), dtype_names[t->dtype], nbytes,
                        t->end - t->begin);
    }
    return 0;
}

static int header_to_file(const char *label, const JsonValue *root, const unsigned char *data, uint64_t dlen, StFile *f,
                          char *err, size_t errlen) {
    if (root->type != JSON_OBJ) return msd_errf(err, errlen, "%s: header is not a JSON object", label);
    /* duplicate keys, at the top and in every nested object */
    for (int pass = -1; pass < root->n; pass++) {
        const JsonValue *o = pass < 0 ? root : &root->items[pass];
        if (o->type != JSON_OBJ || o->n < 2) continue;
        NameIdx *ix = sorted_names(o->n, jkey_of, o);
        for (int i = 1; i < o->n; i++)
            if (strcmp(ix[i].s, ix[i - 1].s) == 0) {
                int r = pass < 0 ? msd_errf(err, errlen, "%s: duplicate key '%s' in header", label, ix[i].s)
                                 : msd_errf(err, errlen, "%s: '%s': duplicate key '%s'", label, root->keys[pass],
                                            ix[i].s);
                free(ix);
                return r;
            }
        free(ix);
    }
    int nt = 0;
    for (int i = 0; i < root->n; i++) nt += strcmp(root->keys[i], "__metadata__") != 0;
    f->t = msd_calloc((size_t)(nt ? nt : 1), sizeof *f->t);
    for (int i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        const JsonValue *v = &root->items[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (v->type != JSON_OBJ) return msd_errf(err, errlen, "%s: __metadata__ is not an object", label);
            f->meta = msd_calloc((size_t)(v->n ? v->n : 1), sizeof *f->meta);
            for (int k = 0; k < v->n; k++) {
                if (v->items[k].type != JSON_STR)
                    return msd_errf(err, errlen, "%s: __metadata__ key '%s': value is not a string", label,
                                    v->keys[k]);
                f->meta[k].key = msd_strdup(v->keys[k]);
                f->meta[k].value = msd_strdup(v->items[k].s);
                f->nmeta++;
            }
            continue;
        }
        StTensor *t = &f->t[f->n];
        t->name = msd_strdup(key);
        f->n++;
        if (tensor_entry(label, key, v, dlen, t, err, errlen)) return -1;
    }
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_offset);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        StTensor *t = &f->t[i];
        if (t->begin < at)
            return msd_errf(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%s'",
                            label, t->name, t->begin, t->end, f->t[i - 1].name);
        if (t->begin > at)
            return msd_errf(err, errlen, "%s: tensor '%s': gap of %" PRIu64 " bytes before its data at %" PRIu64,
                            label, t->name, t->begin - at, t->begin);
        at = t->end;
        t->data = data + t->begin;
    }
    if (at != dlen)
        return msd_errf(err, errlen, "%s: %" PRIu64 " bytes after the last tensor's data (data section %" PRIu64
                        " bytes, tensors cover %" PRIu64 ")", label, dlen - at, dlen, at);
    NameIdx *ix = sorted_names(f->n, tensor_name_of, f->t);
    f->by_name = msd_malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
    for (int i = 0; i < f->n; i++) f->by_name[i] = ix[i].i;
    free(ix);
    return 0;
}

int st_parse(StFile *f, const void *buf, size_t len, const char *label, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    const unsigned char *b = buf;
    if (!label) label = "<buffer>";
    if (len < 8)
        return msd_errf(err, errlen, "%s: %zu bytes, too short for the 8-byte header length", label, len);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | b[k];
    if (hlen > len - 8)
        return msd_errf(err, errlen, "%s: header length %" PRIu64 " exceeds the %zu bytes after it", label, hlen,
                        len - 8);
    if (hlen > ST_MAX_HEADER)
        return msd_errf(err, errlen, "%s: header length %" PRIu64 " over the %u-byte limit", label, hlen,
                        ST_MAX_HEADER);
    if (hlen == 0 || b[8] != '{') return msd_errf(err, errlen, "%s: header does not start with '{'", label);
    JsonValue root;
    /* The Python writer pads with spaces: json_parse accepts JSON whitespace after the object. */
    int rc = json_parse(&root, b + 8, (size_t)hlen, JSON_MAX_DEPTH, label, err, errlen);
    if (rc == 0) rc = header_to_file(label, &root, b + 8 + hlen, (uint64_t)(len - 8 - hlen), f, err, errlen);
    json_free(&root);
    if (rc) st_free(f);
    return rc;
}

/* Read n bytes at the file's current position into p: 0, or -1 with a message. */
static int read_full(int fd, unsigned char *p, size_t n, const char *path, char *err, size_t errlen) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return msd_errf(err, errlen, "%s: read: %s", path, r < 0 ? strerror(errno) : "file shrank while reading");
        got += (size_t)r;
    }
    return 0;
}

int st_read(StFile *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever; it is refused
     * below as not a regular file (for regular files the flag changes nothing) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return msd_errf(err, errlen, "%s: open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return msd_errf(err, errlen, "%s: fstat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return msd_errf(err, errlen, "%s: not a regular file", path);
    }
    /* The header first: a file whose header is wrong is refused before its data is read (the
     * buffer is allocated for the real file size, but its pages are only touched by reads). */
    size_t len = (size_t)st.st_size, head = len < 8 ? len : 8;
    unsigned char *buf = msd_malloc(len ? len : 1);
    int rc = read_full(fd, buf, head, path, err, errlen);
    if (rc == 0 && len >= 8) {
        uint64_t hlen = 0;
        for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | buf[k];
        if (hlen <= len - 8 && hlen <= ST_MAX_HEADER) head = 8 + (size_t)hlen;
        rc = read_full(fd, buf + 8, head - 8, path, err, errlen);
    }
    if (rc == 0) rc = st_parse(f, buf, len, path, err, errlen);
    if (rc == 0) rc = read_full(fd, buf + head, len - head, path, err, errlen);
    close(fd);
    if (rc) {
        st_free(f);
        free(buf);
        return -1;
    }
    f->buf = buf;
    return 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const StTensor *t = &f->t[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *st_meta_get(const StFile *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000u | (man << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else { /* subnormal: value man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_tensor_to_f32(const StTensor *t, float *out) {
    const unsigned char *d = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        size_t o = (size_t)i * dtype_sizes[t->dtype];
        switch (t->dtype) {
        case ST_F32: memcpy(&out[i], d + o, 4); break;
        case ST_F16: { uint16_t h; memcpy(&h, d + o, 2); out[i] = half_to_float(h); } break;
        case ST_BF16: { uint16_t h; memcpy(&h, d + o, 2); uint32_t b = (uint32_t)h << 16; memcpy(&out[i], &b, 4); } break;
        case ST_F64: { double x; memcpy(&x, d + o, 8); out[i] = (float)x; } break;
        case ST_I64: { int64_t x; memcpy(&x, d + o, 8); out[i] = (float)x; } break;
        case ST_I32: { int32_t x; memcpy(&x, d + o, 4); out[i] = (float)x; } break;
        case ST_I16: { int16_t x; memcpy(&x, d + o, 2); out[i] = (float)x; } break;
        case ST_I8: out[i] = (float)(int8_t)d[o]; break;
        case ST_U8: out[i] = (float)d[o]; break;
        case ST_BOOL: out[i] = d[o] ? 1.0f : 0.0f; break;
        default: MSD_CHECK(!"bad dtype");
        }
    }
    return 0;
}

/* ==== writer ============================================================================ */

typedef struct Buf {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 1024;
        b->p = realloc(b->p, b->cap);
        if (!b->p) msd_die("out of memory building a safetensors header");
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void buf_puts(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A JSON string as serde_json writes it. */
static void buf_json_string(Buf *b, const char *s) {
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *p); buf_puts(b, esc); }
            else buf_put(b, (const char *)p, 1);
        }
    }
    buf_puts(b, "\"");
}


/* Validate and build the padded header (with its 8-byte length in front) and the name order.
 * Returns 0 and fills *hdr (caller frees hdr->p) and *order (caller frees), or -1. */
static int build_header(const char *label, const StWriteTensor *t, int n, const StMeta *meta, int nmeta, Buf *hdr,
                        int **order_out, char *err, size_t errlen) {
    memset(hdr, 0, sizeof *hdr);
    if (n < 0 || nmeta < 0) return msd_errf(err, errlen, "%s: negative tensor or metadata count", label);
    int *order = msd_malloc((size_t)(n ? n : 1) * sizeof *order);
    int *morder = msd_malloc((size_t)(nmeta ? nmeta : 1) * sizeof *morder);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!t[i].name || strcmp(t[i].name, "__metadata__") == 0)
            rc = msd_errf(err, errlen, "%s: tensor %d: invalid name '%s'", label, i, t[i].name ? t[i].name : "(null)");
        else if ((unsigned)t[i].dtype >= ST_NDTYPES || t[i].ndim < 0 || t[i].ndim > TENSOR_MAX_DIMS)
            rc = msd_errf(err, errlen, "%s: tensor '%s': invalid dtype or rank", label, t[i].name);
        for (int k = 0; !rc && k < t[i].ndim; k++)
            if (t[i].shape[k] < 0) rc = msd_errf(err, errlen, "%s: tensor '%s': negative dimension", label, t[i].name);
    }
    for (int i = 0; i < nmeta && !rc; i++)
        if (!meta[i].key || !meta[i].value)
            rc = msd_errf(err, errlen, "%s: metadata pair %d has a NULL key or value", label, i);
    if (!rc) {
        NameIdx *ix = sorted_names(n, wt_name_of, t);
        for (int i = 0; i < n; i++) order[i] = ix[i].i;
        free(ix);
        ix = sorted_names(nmeta, meta_key_of, meta);
        for (int i = 0; i < nmeta; i++) morder[i] = ix[i].i;
        free(ix);
        for (int i = 1; i < n && !rc; i++)
            if (strcmp(t[order[i]].name, t[order[i - 1]].name) == 0)
                rc = msd_errf(err, errlen, "%s: duplicate tensor name '%s'", label, t[order[i]].name);
        for (int i = 1; i < nmeta && !rc; i++)
            if (strcmp(meta[morder[i]].key, meta[morder[i - 1]].key) == 0)
                rc = msd_errf(err, errlen, "%s: duplicate metadata key '%s'", label, meta[morder[i]].key);
    }
    if (rc) {
        free(order);
        free(morder);
        return -1;
    }
    buf_put(hdr, "\0\0\0\0\0\0\0\0", 8);
    buf_puts(hdr, "{");
    int first = 1;
    if (nmeta > 0) {
        buf_puts(hdr, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) buf_puts(hdr, ",");
            buf_json_string(hdr, meta[morder[i]].key);
            buf_puts(hdr, ":");
            buf_json_string(hdr, meta[morder[i]].value);
        }
        buf_puts(hdr, "}");
        first = 0;
    }
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const StWriteTensor *w = &t[order[i]];
        char num[64];
        if (!first) buf_puts(hdr, ",");
        first = 0;
        buf_json_string(hdr, w->name);
        buf_puts(hdr, ":{\"dtype\":\"");
        buf_puts(hdr, dtype_names[w->dtype]);
        buf_puts(hdr, "\",\"shape\":[");
        uint64_t numel = 1;
        for (int k = 0; k < w->ndim; k++) {
            snprintf(num, sizeof num, k ? ",%" PRId64 : "%" PRId64, w->shape[k]);
            buf_puts(hdr, num);
            numel *= (uint64_t)w->shape[k];
        }
        uint64_t end = at + numel * dtype_sizes[w->dtype];
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", at, end);
        buf_puts(hdr, num);
        at = end;
    }
    buf_puts(hdr, "}");
    while ((hdr->n - 8) % 8) buf_puts(hdr, " ");
    uint64_t hlen = hdr->n - 8;
    for (int k = 0; k < 8; k++) hdr->p[k] = (char)(hlen >> (8 * k));
    free(morder);
    *order_out = order;
    return 0;
}

static size_t wt_bytes(const StWriteTensor *w) {
    return (size_t)shape_numel(w->ndim, w->shape) * dtype_sizes[w->dtype];
}

int st_serialize(const StWriteTensor *t, int n, const StMeta *meta, int nmeta, unsigned char **out, size_t *outlen,
                 char *err, size_t errlen) {
    Buf b;
    int *order;
    if (build_header("<buffer>", t, n, meta, nmeta, &b, &order, err, errlen)) return -1;
    for (int i = 0; i < n; i++) {
        size_t nb = wt_bytes(&t[order[i]]);
        if (nb) buf_put(&b, t[order[i]].data, nb);
    }
    free(order);
    *out = (unsigned char *)b.p;
    *outlen = b.n;
    return 0;
}

int st_write(const char *path, const StWriteTensor *t, int n, const StMeta *meta, int nmeta, char *err,
             size_t errlen) {
    Buf hdr;
    int *order;
    if (build_header(path, t, n, meta, nmeta, &hdr, &order, err, errlen)) return -1;
    char *dcopy = msd_strdup(path), *bcopy = msd_strdup(path);
    const char *dir = dirname(dcopy), *base = basename(bcopy);
    size_t tl = strlen(dir) + strlen(base) + 32;
    char *tmp = msd_malloc(tl);
    snprintf(tmp, tl, "%s/.%s.tmp.XXXXXX", dir, base);
    int rc = -1, fd = mkstemp(tmp);
    FILE *fp = NULL;
    if (fd < 0) {
        msd_errf(err, errlen, "%s: creating a temporary file in %s: %s (is the folder writable?)", path, dir,
                 strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0644) != 0 || !(fp = fdopen(fd, "wb"))) {
        msd_errf(err, errlen, "%s: %s: %s", path, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    int ok = fwrite(hdr.p, 1, hdr.n, fp) == hdr.n;
    for (int i = 0; ok && i < n; i++) {
        size_t nb = wt_bytes(&t[order[i]]);
        ok = nb == 0 || fwrite(t[order[i]].data, 1, nb, fp) == nb;
    }
    if (!ok || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        msd_errf(err, errlen, "%s: writing %s: %s", path, tmp, strerror(errno));
        fclose(fp);
        unlink(tmp);
        goto out;
    }
    if (fclose(fp) != 0) {
        msd_errf(err, errlen, "%s: closing %s: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        msd_errf(err, errlen, "%s: rename from %s: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        msd_errf(err, errlen, "%s: fsync of folder %s: %s", path, dir, strerror(errno));
        if (dfd >= 0) close(dfd);
        goto out;
    }
    close(dfd);
    rc = 0;
out:
    free(tmp);
    free(dcopy);
    free(bcopy);
    free(hdr.p);
    free(order);
    return rc;
}

/* ==== ParamSets ========================================================================= */

int st_load_slab(const StFile *f, const ParamSet *ps, float *slab, const char *prefix, unsigned char *used,
                 char *err, size_t errlen) {
    float *host = NULL;
    int64_t hcap = 0;
    int rc = 0;
    for (int i = 0; i < ps->n && !rc; i++) {
        const Param *p = &ps->p[i];
        char name[PARAM_MAX_NAME + 64];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        const StTensor *t = st_find(f, name);
        if (!t) { rc = msd_errf(err, errlen, "missing tensor '%s'", name); break; }
        int same = t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
        if (!same) {
            char a[160], b[160];
            rc = msd_errf(err, errlen, "tensor '%s': shape %s in file, %s expected", name,
                          shape_str(t->ndim, t->shape, a, sizeof a), shape_str(p->ndim, p->shape, b, sizeof b));
            break;
        }
        if (p->numel > hcap) {
            free(host);
            hcap = p->numel;
            host = msd_malloc((size_t)hcap * sizeof *host);
        }
        st_tensor_to_f32(t, host);
        int64_t bad = 0, first = -1;
        for (int64_t k = 0; k < p->numel; k++)
            if (!isfinite(host[k])) { bad++; if (first < 0) first = k; }
        if (bad) {
            rc = msd_errf(err, errlen, "tensor '%s': %lld of %lld values are not finite (first at element %lld: %g)",
                          name, (long long)bad, (long long)p->numel, (long long)first, (double)host[first]);
            break;
        }
        if (p->numel) ps->be->upload(ps->ctx, slab + p->offset, host, p->numel);
        if (used) used[t - f->t] = 1;
    }
    free(host);
    return rc;
}

int st_check_unused(const StFile *f, const unsigned char *used, char *err, size_t errlen) {
    for (int i = 0; i < f->n; i++)
        if (!used[i]) return msd_errf(err, errlen, "unexpected tensor '%s' (no such parameter)", f->t[i].name);
    return 0;
}

int st_load_params(const char *path, ParamSet *ps, const char *prefix, int flags, char *err, size_t errlen) {
    StFile f;
    if (st_read(&f, path, err, errlen)) return -1;
    unsigned char *used = msd_calloc((size_t)(f.n ? f.n : 1), 1);
    char e[512];
    int rc = st_load_slab(&f, ps, ps->data, prefix, used, e, sizeof e);
    if (!rc && !(flags & ST_ALLOW_EXTRA)) rc = st_check_unused(&f, used, e, sizeof e);
    if (rc) msd_errf(err, errlen, "%s: %s", path, e);
    free(used);
    st_free(&f);
    return rc;
}

int st_save_params(const char *path, const ParamSet *ps, const char *prefix, const StMeta *meta, int nmeta,
                   char *err, size_t errlen) {
    MSD_CHECK(ps->data);
    float *host = msd_malloc((size_t)(ps->total ? ps->total : 1) * sizeof *host);
    if (ps->total) ps->be->download(ps->ctx, host, ps->data, ps->total);
    StWriteTensor *w = msd_calloc((size_t)(ps->n ? ps->n : 1), sizeof *w);
    char **names = msd_calloc((size_t)(ps->n ? ps->n : 1), sizeof *names);
    for (int i = 0; i < ps->n; i++) {
        size_t l = strlen(prefix) + strlen(ps->p[i].name) + 1;
        names[i] = msd_malloc(l);
        snprintf(names[i], l, "%s%s", prefix, ps->p[i].name);
        w[i] = (StWriteTensor){names[i], ST_F32, ps->p[i].ndim, ps->p[i].shape, host + ps->p[i].offset};
    }
    int rc = st_write(path, w, ps->n, meta, nmeta, err, errlen);
    for (int i = 0; i < ps->n; i++) free(names[i]);
    free(names);
    free(w);
    free(host);
    return rc;
}
