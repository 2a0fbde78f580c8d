/* unet.c: the UNet of docs/UNET.md on the backend table (see unet.h).
 *
 * The network is a flat list of layers: the encoder (input conv, downsamplers, residual
 * blocks; every encoder output is a skip tensor), mid.block0/1, the decoder (upsamplers and
 * residual blocks that concatenate a skip), then the output head. Memory: per (model, batch
 * capacity) one device slab holds every saved activation, the gradient buffers of the skip
 * tensors, two ping-pong gradient buffers for the main path and six work buffers (plus the
 * decoder concatenation and its gradient). The
 * backward recomputes the cheap tensors (GroupNorm outputs, SiLU, modulation, concatenation,
 * upsampling) into the work buffers instead of saving them, which keeps the batch-128
 * footprint small; only conv outputs, qkv, attention probabilities and statistics are saved. */
#include "unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edm.h"
#include "log.h"
#include "philox.h"

#define GN_EPS 1e-5f
#define UNET_NWORK 6

typedef struct Conv {
    int w, b;
    int64_t cin, cout, k, stride;
} Conv;

typedef struct Norm {
    int w, b;
    int64_t C, G;
} Norm;

enum { LAYER_CONV, LAYER_DOWN, LAYER_BLOCK, LAYER_UP };

typedef struct Layer {
    int kind;
    char name[64];
    int64_t cin, cout, rin, rout;
    int skip_from;            /* decoder block: layer whose output is concatenated, else -1 */
    int64_t ch_h;             /* decoder block: channels of the main-path part of the input */
    Conv conv;                /* CONV, DOWN, UP */
    Norm norm0, norm1, norm2; /* BLOCK */
    Conv conv0, conv1, skip, qkv, proj;
    int aff_w, aff_b;
    int has_skip, attn;
    int64_t heads;
    /* activations for the batch capacity (device) */
    float *out, *dout;
    float *mean0, *rstd0, *h0, *mean1, *rstd1, *ss, *dss, *mask, *res, *mean2, *rstd2, *qkv_out, *att, *o;
    int mask_used;            /* the last forward applied the dropout mask */
} Layer;

struct UNet {
    UNetConfig cfg;
    const Backend *be;
    BackendCtx *ctx;
    ParamSet ps;
    EdmEmbed embed;
    int n_layers, n_enc, mid1;
    Layer *layers;
    Norm out_norm;
    Conv out_conv;
    int64_t cap;
    float *slab;
    int64_t slab_n;
    float *out_mean, *out_rstd;
    float *work[UNET_NWORK], *xcat, *dxcat;
    float *host_mask;
    uint64_t drop_seed, drop_step;
    const float *x_in;        /* input of the last forward (caller's memory) */
    int64_t last_n;
    int inference;            /* batch buffers are forward-only (unet_alloc_batch_inference) */
};

/* ---- configuration ---- */

/* fmnist-m and fmnist-xs are the student sizes of docs/UNET.md section 12: the teacher's
 * interface (28x28x1, 10 classes, attention at 7x7) at about 35% and 17% of its parameters,
 * narrower at 28x28 and with one block per encoder level so that FLOPs and latency drop too. */
static const struct { const char *name, *spec; } unet_named[] = {
    {"fmnist-s", "in=1,res=28,ch=32,mult=1-2-2,blocks=2,attn=7,classes=10"},
    {"fmnist-m", "in=1,res=28,ch=16,mult=1-3-3,blocks=1,attn=7,classes=10"},
    {"fmnist-xs", "in=1,res=28,ch=16,mult=1-2-2,blocks=1,attn=7,classes=10"},
    {"tiny", "in=3,res=8,ch=8,mult=1-2,blocks=1,attn=4,classes=3,headch=8"},
};

static void unet_config_default(UNetConfig *c) {
    memset(c, 0, sizeof *c);
    c->in_ch = 1;
    c->res = 28;
    c->model_ch = 32;
    c->levels = 3;
    c->ch_mult[0] = 1; c->ch_mult[1] = 2; c->ch_mult[2] = 2;
    c->num_blocks = 2;
    c->n_attn = 1;
    c->attn_res[0] = 7;
    c->gn_groups = 32;
    c->emb_mult = 4;
    c->head_ch = 64;
}

/* A decimal integer in [lo, hi]; the whole text must be consumed. */
static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    if (!*s) return -1;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* "1-2-2" into list (at most UNET_MAX_LEVELS values in [lo, hi]); "none" is empty if allowed. */
static int parse_list(const char *s, int lo, int hi, int allow_none, int *list, int *n) {
    *n = 0;
    if (allow_none && strcmp(s, "none") == 0) return 0;
    char buf[128];
    if (strlen(s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, "-", &save); t; t = strtok_r(NULL, "-", &save)) {
        if (*n >= UNET_MAX_LEVELS || parse_int(t, lo, hi, &list[*n]) != 0) return -1;
        (*n)++;
    }
    return *n > 0 ? 0 : -1;
}

static int unet_build(UNet *u, char *err, size_t errlen);

static int unet_config_apply(UNetConfig *c, const char *spec, int depth, char *err, size_t errlen) {
    char buf[512];
    if (strlen(spec) >= sizeof buf) return msd_errf(err, errlen, "config spec too long (%zu characters)", strlen(spec));
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    int first = 1;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save), first = 0) {
        char *eq = strchr(t, '=');
        if (!eq) {
            if (!first || depth > 0) return msd_errf(err, errlen, "config spec: '%s' is not key=value", t);
            size_t i;
            for (i = 0; i < sizeof unet_named / sizeof unet_named[0]; i++)
                if (strcmp(t, unet_named[i].name) == 0) break;
            if (i == sizeof unet_named / sizeof unet_named[0]) {
                char known[256] = "";
                for (size_t j = 0; j < sizeof unet_named / sizeof unet_named[0]; j++)
                    snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "", unet_named[j].name);
                return msd_errf(err, errlen, "unknown UNet configuration '%s' (known: %s)", t, known);
            }
            if (unet_config_apply(c, unet_named[i].spec, depth + 1, err, errlen) != 0) return -1;
            continue;
        }
        *eq = 0;
        const char *k = t, *v = eq + 1;
        int ok = -1;
        if (!strcmp(k, "in")) ok = parse_int(v, 1, 64, &c->in_ch);
        else if (!strcmp(k, "res")) ok = parse_int(v, 1, 1024, &c->res);
        else if (!strcmp(k, "ch")) ok = parse_int(v, 2, 4096, &c->model_ch);
        else if (!strcmp(k, "mult")) ok = parse_list(v, 1, 64, 0, c->ch_mult, &c->levels);
        else if (!strcmp(k, "blocks")) ok = parse_int(v, 1, 16, &c->num_blocks);
        else if (!strcmp(k, "attn")) ok = parse_list(v, 1, 1024, 1, c->attn_res, &c->n_attn);
        else if (!strcmp(k, "classes")) ok = parse_int(v, 0, 100000, &c->label_dim);
        else if (!strcmp(k, "cond")) ok = parse_int(v, 0, 100000, &c->cond_dim);
        else if (!strcmp(k, "groups")) ok = parse_int(v, 1, 1024, &c->gn_groups);
        else if (!strcmp(k, "emb")) ok = parse_int(v, 1, 64, &c->emb_mult);
        else if (!strcmp(k, "headch")) ok = parse_int(v, 1, 4096, &c->head_ch);
        else if (!strcmp(k, "dropout")) {
            char *end;
            double d = strtod(v, &end);
            ok = (*v && !*end && d >= 0 && d < 1) ? 0 : -1;
            c->dropout = (float)d;
        } else {
            return msd_errf(err, errlen, "config spec: unknown key '%s' (keys: in res ch mult blocks attn classes "
                            "cond dropout groups emb headch)", k);
        }
        if (ok != 0) return msd_errf(err, errlen, "config spec: bad value '%s' for '%s'", v, k);
    }
    return 0;
}

int unet_config_parse(UNetConfig *cfg, const char *spec, char *err, size_t errlen) {
    UNetConfig c;
    unet_config_default(&c);
    if (!spec || !*spec) return msd_errf(err, errlen, "empty config spec");
    if (unet_config_apply(&c, spec, 0, err, errlen) != 0) return -1;
    if (c.label_dim > 0 && c.cond_dim > 0) return msd_errf(err, errlen, "config spec: classes and cond are exclusive");
    if (c.model_ch % 2) return msd_errf(err, errlen, "config spec: ch must be even (sinusoidal embedding), not %d", c.model_ch);
    if (c.res % (1 << (c.levels - 1)))
        return msd_errf(err, errlen, "config spec: res %d is not divisible by 2^(levels-1) = %d", c.res,
                        1 << (c.levels - 1));
    for (int l = 0; l < c.levels; l++)
        if ((int64_t)c.model_ch * c.ch_mult[l] > 16384)
            return msd_errf(err, errlen, "config spec: level %d is wider than 16384 channels", l);
    for (int a = 0; a < c.n_attn; a++) {
        int found = 0;
        for (int l = 0; l < c.levels; l++) found |= (c.res >> l) == c.attn_res[a];
        if (!found) return msd_errf(err, errlen, "config spec: attention resolution %d is not a level's resolution", c.attn_res[a]);
    }
    /* the GroupNorm and head divisibility checks walk the real layout */
    UNet *u = msd_calloc(1, sizeof *u);
    u->cfg = c;
    params_init(&u->ps);
    int rc = unet_build(u, err, errlen);
    free(u->layers);
    params_free(&u->ps);
    free(u);
    if (rc != 0) return -1;
    *cfg = c;
    return 0;
}

const char *unet_config_str(const UNetConfig *c, char *buf, size_t len) {
    char mult[64] = "", attn[64] = "";
    size_t m = 0, a = 0;
    for (int l = 0; l < c->levels; l++) m += (size_t)snprintf(mult + m, sizeof mult - m, "%s%d", l ? "-" : "", c->ch_mult[l]);
    for (int i = 0; i < c->n_attn; i++) a += (size_t)snprintf(attn + a, sizeof attn - a, "%s%d", i ? "-" : "", c->attn_res[i]);
    snprintf(buf, len, "in=%d,res=%d,ch=%d,mult=%s,blocks=%d,attn=%s,classes=%d,cond=%d,dropout=%g,groups=%d,emb=%d,headch=%d",
             c->in_ch, c->res, c->model_ch, mult, c->num_blocks, c->n_attn ? attn : "none", c->label_dim, c->cond_dim,
             (double)c->dropout, c->gn_groups, c->emb_mult, c->head_ch);
    return buf;
}

/* ---- building the layer list and registering parameters ---- */

/* dst = a + b; names are short and bounded (a longer one is a bug). */
static void join_name(char *dst, size_t len, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    MSD_CHECK(la + lb < len);
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb + 1);
}

static void reg_conv(UNet *u, Conv *c, const char *name, int64_t cin, int64_t cout, int64_t k, int64_t stride) {
    char n[2 * PARAM_MAX_NAME];
    int64_t s[4] = {cout, cin, k, k};
    c->cin = cin; c->cout = cout; c->k = k; c->stride = stride;
    join_name(n, sizeof n, name, ".weight");
    c->w = params_add(&u->ps, n, 4, s);
    join_name(n, sizeof n, name, ".bias");
    c->b = params_add(&u->ps, n, 1, s);
}

static int reg_norm(UNet *u, Norm *g, const char *name, int64_t C, char *err, size_t errlen) {
    char n[2 * PARAM_MAX_NAME];
    int64_t G = C / 4 < u->cfg.gn_groups ? C / 4 : u->cfg.gn_groups;
    if (G < 1) G = 1;
    if (C % G) return msd_errf(err, errlen, "config: GroupNorm %s has %lld channels, not divisible into %lld groups",
                               name, (long long)C, (long long)G);
    g->C = C; g->G = G;
    join_name(n, sizeof n, name, ".weight");
    g->w = params_add(&u->ps, n, 1, &C);
    join_name(n, sizeof n, name, ".bias");
    g->b = params_add(&u->ps, n, 1, &C);
    return 0;
}

static int has_attn(const UNetConfig *c, int r) {
    for (int i = 0; i < c->n_attn; i++)
        if (c->attn_res[i] == r) return 1;
    return 0;
}

static int add_block(UNet *u, Layer *L, const char *name, int64_t cin, int64_t cout, int64_t r, int attn,
                     char *err, size_t errlen) {
    char n[2 * PARAM_MAX_NAME];
    int64_t E = (int64_t)u->cfg.emb_mult * u->cfg.model_ch;
    L->kind = LAYER_BLOCK;
    snprintf(L->name, sizeof L->name, "%s", name);
    L->cin = cin; L->cout = cout; L->rin = L->rout = r;
    L->attn = attn;
    join_name(n, sizeof n, name, ".norm0");
    if (reg_norm(u, &L->norm0, n, cin, err, errlen)) return -1;
    join_name(n, sizeof n, name, ".conv0");
    reg_conv(u, &L->conv0, n, cin, cout, 3, 1);
    int64_t s[2] = {2 * cout, E};
    join_name(n, sizeof n, name, ".affine.weight");
    L->aff_w = params_add(&u->ps, n, 2, s);
    join_name(n, sizeof n, name, ".affine.bias");
    L->aff_b = params_add(&u->ps, n, 1, s);
    join_name(n, sizeof n, name, ".norm1");
    if (reg_norm(u, &L->norm1, n, cout, err, errlen)) return -1;
    join_name(n, sizeof n, name, ".conv1");
    reg_conv(u, &L->conv1, n, cout, cout, 3, 1);
    L->has_skip = cin != cout;
    if (L->has_skip) {
        join_name(n, sizeof n, name, ".skip");
        reg_conv(u, &L->skip, n, cin, cout, 1, 1);
    }
    if (attn) {
        L->heads = cout / u->cfg.head_ch > 1 ? cout / u->cfg.head_ch : 1;
        if (cout % L->heads)
            return msd_errf(err, errlen, "config: attention in %s: %lld channels not divisible into %lld heads",
                            name, (long long)cout, (long long)L->heads);
        join_name(n, sizeof n, name, ".norm2");
        if (reg_norm(u, &L->norm2, n, cout, err, errlen)) return -1;
        join_name(n, sizeof n, name, ".qkv");
        reg_conv(u, &L->qkv, n, cout, 3 * cout, 1, 1);
        join_name(n, sizeof n, name, ".proj");
        reg_conv(u, &L->proj, n, cout, cout, 1, 1);
    }
    return 0;
}

static void add_conv_layer(UNet *u, Layer *L, int kind, const char *name, int64_t cin, int64_t cout, int64_t rin,
                           int64_t rout, int64_t stride) {
    L->kind = kind;
    snprintf(L->name, sizeof L->name, "%s", name);
    L->cin = cin; L->cout = cout; L->rin = rin; L->rout = rout;
    reg_conv(u, &L->conv, name, cin, cout, 3, stride);
}

static int unet_build(UNet *u, char *err, size_t errlen) {
    const UNetConfig *c = &u->cfg;
    int nb = c->num_blocks, lv = c->levels;
    int64_t E = (int64_t)c->emb_mult * c->model_ch;
    int max_layers = 1 + (lv - 1) + lv * nb + 2 + lv * (nb + 1) + (lv - 1);
    u->layers = msd_calloc((size_t)max_layers, sizeof(Layer));
    edm_embed_register(&u->embed, &u->ps, c->model_ch, E, unet_config_cdim(c));
    int *stack = msd_calloc((size_t)max_layers, sizeof(int)), sp = 0, n = 0, rc = -1;
    char name[64];
    int64_t R[UNET_MAX_LEVELS], W[UNET_MAX_LEVELS];
    for (int l = 0; l < lv; l++) { R[l] = c->res >> l; W[l] = (int64_t)c->model_ch * c->ch_mult[l]; }
    for (int i = 0; i < max_layers; i++) u->layers[i].skip_from = -1;

    snprintf(name, sizeof name, "enc.%lldx%lld_conv", (long long)R[0], (long long)R[0]);
    add_conv_layer(u, &u->layers[n], LAYER_CONV, name, c->in_ch, W[0], R[0], R[0], 1);
    stack[sp++] = n++;
    int64_t ch = W[0];
    for (int l = 0; l < lv; l++) {
        if (l > 0) {
            snprintf(name, sizeof name, "enc.%lldx%lld_down", (long long)R[l], (long long)R[l]);
            add_conv_layer(u, &u->layers[n], LAYER_DOWN, name, ch, ch, R[l - 1], R[l], 2);
            stack[sp++] = n++;
        }
        for (int i = 0; i < nb; i++) {
            snprintf(name, sizeof name, "enc.%lldx%lld_block%d", (long long)R[l], (long long)R[l], i);
            if (add_block(u, &u->layers[n], name, ch, W[l], R[l], has_attn(c, (int)R[l]), err, errlen)) goto out;
            ch = W[l];
            stack[sp++] = n++;
        }
    }
    u->n_enc = n;
    if (add_block(u, &u->layers[n++], "mid.block0", ch, ch, R[lv - 1], 1, err, errlen)) goto out;
    u->mid1 = n;
    if (add_block(u, &u->layers[n++], "mid.block1", ch, ch, R[lv - 1], 0, err, errlen)) goto out;
    for (int l = lv - 1; l >= 0; l--) {
        if (l < lv - 1) {
            snprintf(name, sizeof name, "dec.%lldx%lld_up", (long long)R[l], (long long)R[l]);
            add_conv_layer(u, &u->layers[n], LAYER_UP, name, ch, ch, R[l + 1], R[l], 1);
            n++;
        }
        for (int i = 0; i <= nb; i++) {
            MSD_CHECK(sp > 0);
            int j = stack[--sp];
            snprintf(name, sizeof name, "dec.%lldx%lld_block%d", (long long)R[l], (long long)R[l], i);
            Layer *L = &u->layers[n];
            if (add_block(u, L, name, ch + u->layers[j].cout, W[l], R[l], has_attn(c, (int)R[l]), err, errlen)) goto out;
            L->skip_from = j;
            L->ch_h = ch;
            ch = W[l];
            n++;
        }
    }
    MSD_CHECK(sp == 0 && n == max_layers);
    u->n_layers = n;
    if (reg_norm(u, &u->out_norm, "out.norm", ch, err, errlen)) goto out;
    reg_conv(u, &u->out_conv, "out.conv", ch, c->in_ch, 3, 1);
    rc = 0;
out:
    free(stack);
    return rc;
}

UNet *unet_new(const UNetConfig *cfg, const Backend *be, BackendCtx *ctx) {
    MSD_CHECK(cfg && be);
    UNet *u = msd_calloc(1, sizeof *u);
    u->cfg = *cfg;
    u->be = be;
    u->ctx = ctx;
    params_init(&u->ps);
    char err[256];
    if (unet_build(u, err, sizeof err) != 0) msd_check_fail(__FILE__, __LINE__, err); /* unparsed config: a bug */
    params_alloc(&u->ps, be, ctx);
    return u;
}

static void unet_free_batch(UNet *u) {
    if (u->slab) u->be->free(u->ctx, u->slab);
    u->slab = NULL;
    u->slab_n = 0;
    u->cap = 0;
    free(u->host_mask);
    u->host_mask = NULL;
}

void unet_destroy(UNet **pu) {
    if (!pu || !*pu) return;
    UNet *u = *pu;
    unet_free_batch(u);
    params_free(&u->ps);
    free(u->layers);
    free(u);
    *pu = NULL;
}

ParamSet *unet_params(UNet *u) { return &u->ps; }
const UNetConfig *unet_config(const UNet *u) { return &u->cfg; }
void unet_set_dropout_seed(UNet *u, uint64_t seed) { u->drop_seed = seed; }

void unet_init(UNet *u, uint64_t seed) {
    ParamSet *ps = &u->ps;
    edm_embed_init(&u->embed, ps, seed);
    for (int i = 0; i < u->n_layers; i++) {
        Layer *L = &u->layers[i];
        if (L->kind != LAYER_BLOCK) {
            edm_param_default(ps, L->conv.w, L->conv.b, L->cin * 9, seed);
            continue;
        }
        Norm *norms[3] = {&L->norm0, &L->norm1, L->attn ? &L->norm2 : NULL};
        for (int k = 0; k < 3; k++)
            if (norms[k]) { edm_param_fill(ps, norms[k]->w, 1.0f); edm_param_fill(ps, norms[k]->b, 0.0f); }
        edm_param_default(ps, L->conv0.w, L->conv0.b, L->cin * 9, seed);
        edm_param_default(ps, L->aff_w, L->aff_b, u->embed.E, seed);
        edm_param_fill(ps, L->conv1.w, 0.0f);
        edm_param_fill(ps, L->conv1.b, 0.0f);
        if (L->has_skip) edm_param_default(ps, L->skip.w, L->skip.b, L->cin, seed);
        if (L->attn) {
            edm_param_default(ps, L->qkv.w, L->qkv.b, L->cout, seed);
            edm_param_fill(ps, L->proj.w, 0.0f);
            edm_param_fill(ps, L->proj.b, 0.0f);
        }
    }
    edm_param_fill(ps, u->out_norm.w, 1.0f);
    edm_param_fill(ps, u->out_norm.b, 0.0f);
    edm_param_fill(ps, u->out_conv.w, 0.0f);
    edm_param_fill(ps, u->out_conv.b, 0.0f);
}

/* ---- activation memory ---- */

/* Work buffers: T0, T4, T5 hold tensors of a block's output width ("small": cout x HW, the
 * head's input); T1, T2, T3 also a block's input width, 3C x HW of qkv and the upsampled
 * input of an up layer ("big"). */
static void unet_carve(UNet *u, EdmArena *a, int64_t cap) {
    int64_t small = 1, big = 1, maxcat = 1;
    int64_t sh_h0 = 1, sh_g = 1, sh_ss = 1, sh_c = 1, sh_qkv = 1, sh_att = 1;  /* inference: shared transients */
    for (int i = 0; i < u->n_layers; i++) {
        Layer *L = &u->layers[i];
        int64_t hw = L->rout * L->rout, co = L->cout * hw;
        int64_t b = L->kind == LAYER_UP ? L->cin * hw : L->cin * L->rin * L->rin;
        if (L->attn && 3 * co > b) b = 3 * co;
        big = b > big ? b : big;
        big = co > big ? co : big;
        if (L->kind == LAYER_BLOCK) small = co > small ? co : small;
        if (L->skip_from >= 0 && L->cin * hw > maxcat) maxcat = L->cin * hw;
        if (L->kind != LAYER_BLOCK) continue;
        sh_h0 = co > sh_h0 ? co : sh_h0;
        int64_t g = L->norm0.G > L->norm1.G ? L->norm0.G : L->norm1.G;
        if (L->attn && L->norm2.G > g) g = L->norm2.G;
        sh_g = g > sh_g ? g : sh_g;
        sh_ss = 2 * L->cout > sh_ss ? 2 * L->cout : sh_ss;
        if (L->attn) {
            sh_c = co > sh_c ? co : sh_c;
            sh_qkv = 3 * co > sh_qkv ? 3 * co : sh_qkv;
            sh_att = L->heads * hw * hw > sh_att ? L->heads * hw * hw : sh_att;
        }
    }
    Layer *last = &u->layers[u->n_layers - 1];
    int64_t head = last->cout * last->rout * last->rout;
    small = head > small ? head : small;
    edm_embed_carve(&u->embed, a, cap);
    int inf = u->inference;
    float *sh[11] = {0};
    if (inf) {   /* one set of per-block buffers shared by every block (nothing is kept for a backward) */
        int64_t sz[11] = {sh_h0, sh_g, sh_g, sh_g, sh_g, sh_ss, sh_c, sh_g, sh_g, sh_qkv, sh_att};
        for (int k = 0; k < 11; k++) sh[k] = edm_arena_take(a, cap * sz[k]);
    }
    int64_t maxg = 1;
    for (int i = 0; i < u->n_layers; i++) {
        Layer *L = &u->layers[i];
        int64_t hw = L->rout * L->rout, C = L->cout;
        if (i < u->n_enc || i == u->mid1 || !inf) L->out = edm_arena_take(a, cap * C * hw);
        if (i < u->n_enc) L->dout = inf ? NULL : edm_arena_take(a, cap * C * hw);
        else if (C * hw > maxg) maxg = C * hw;
        if (L->kind != LAYER_BLOCK) continue;
        L->mask = u->cfg.dropout > 0 && !inf ? edm_arena_take(a, cap * C * hw) : NULL;
        L->dss = inf ? NULL : edm_arena_take(a, cap * 2 * C);
        if (inf) {
            L->h0 = sh[0]; L->mean0 = sh[1]; L->rstd0 = sh[2]; L->mean1 = sh[3]; L->rstd1 = sh[4]; L->ss = sh[5];
            if (L->attn) { L->res = sh[6]; L->mean2 = sh[7]; L->rstd2 = sh[8]; L->qkv_out = sh[9]; L->att = sh[10]; L->o = sh[0]; }
            continue;
        }
        L->mean0 = edm_arena_take(a, cap * L->norm0.G);
        L->rstd0 = edm_arena_take(a, cap * L->norm0.G);
        L->h0 = edm_arena_take(a, cap * C * hw);
        L->mean1 = edm_arena_take(a, cap * L->norm1.G);
        L->rstd1 = edm_arena_take(a, cap * L->norm1.G);
        L->ss = edm_arena_take(a, cap * 2 * C);
        if (L->attn) {
            L->res = edm_arena_take(a, cap * C * hw);
            L->mean2 = edm_arena_take(a, cap * L->norm2.G);
            L->rstd2 = edm_arena_take(a, cap * L->norm2.G);
            L->qkv_out = edm_arena_take(a, cap * 3 * C * hw);
            L->att = edm_arena_take(a, cap * L->heads * hw * hw);
            L->o = edm_arena_take(a, cap * C * hw);
        }
    }
    /* training: the main-path gradients of mid and decoder layers alternate between two
     * buffers; inference: so do the decoder's activations (mid.block1's output, the
     * bottleneck, keeps its own) */
    float *ping[2] = {edm_arena_take(a, cap * maxg), edm_arena_take(a, cap * maxg)};
    for (int i = u->n_enc; i < u->n_layers; i++) {
        if (inf) {
            if (i != u->mid1) u->layers[i].out = ping[(i - u->n_enc) % 2];
            u->layers[i].dout = NULL;
        } else {
            u->layers[i].dout = ping[(i - u->n_enc) % 2];
        }
    }
    u->out_mean = edm_arena_take(a, cap * u->out_norm.G);
    u->out_rstd = edm_arena_take(a, cap * u->out_norm.G);
    int64_t wsz[UNET_NWORK] = {small, big, big, big, small, small};
    for (int k = 0; k < UNET_NWORK; k++) u->work[k] = edm_arena_take(a, cap * wsz[k]);
    u->xcat = edm_arena_take(a, cap * maxcat);
    u->dxcat = inf ? NULL : edm_arena_take(a, cap * maxcat);
}

static int64_t unet_alloc(UNet *u, int64_t N, int inference) {
    MSD_CHECK(N > 0);
    unet_free_batch(u);
    u->inference = inference;
    EdmArena a = {NULL, 0};
    unet_carve(u, &a, N);
    u->slab_n = a.used;
    u->slab = u->be->alloc(u->ctx, a.used);
    a.base = u->slab;
    a.used = 0;
    unet_carve(u, &a, N);
    u->cap = N;
    if (u->cfg.dropout > 0 && !inference) {
        int64_t m = 0;
        for (int i = 0; i < u->n_layers; i++)
            if (u->layers[i].kind == LAYER_BLOCK) {
                int64_t s = u->layers[i].cout * u->layers[i].rout * u->layers[i].rout;
                m = s > m ? s : m;
            }
        u->host_mask = msd_malloc((size_t)(N * m) * sizeof(float));
    }
    return u->slab_n * (int64_t)sizeof(float);
}

int64_t unet_alloc_batch(UNet *u, int64_t N) { return unet_alloc(u, N, 0); }
int64_t unet_alloc_batch_inference(UNet *u, int64_t N) { return unet_alloc(u, N, 1); }

/* ---- op helpers ---- */

#define PD(i) ((i) >= 0 ? params_data(&u->ps, (i)) : NULL)
#define PG(i) ((i) >= 0 ? params_grad(&u->ps, (i)) : NULL)

static void conv_fwd(UNet *u, const Conv *c, float *out, const float *in, int64_t N, int64_t r) {
    ConvShape s = {N, c->cin, r, r, c->cout, c->k, c->stride, c->k / 2};
    u->be->conv2d_forward(u->ctx, out, in, PD(c->w), PD(c->b), &s);
}

static void conv_bwd(UNet *u, const Conv *c, float *din, const float *dout, const float *in, int64_t N, int64_t r) {
    ConvShape s = {N, c->cin, r, r, c->cout, c->k, c->stride, c->k / 2};
    u->be->conv2d_backward(u->ctx, din, PG(c->w), PG(c->b), dout, in, PD(c->w), &s);
}

static void gn_fwd(UNet *u, const Norm *g, float *out, float *mean, float *rstd, const float *in, int64_t N,
                   int64_t hw) {
    u->be->groupnorm_forward(u->ctx, out, mean, rstd, in, PD(g->w), PD(g->b), N, g->C, hw, g->G, GN_EPS);
}

static void gn_bwd(UNet *u, const Norm *g, float *din, const float *dout, const float *in, const float *mean,
                   const float *rstd, int64_t N, int64_t hw) {
    u->be->groupnorm_backward(u->ctx, din, PG(g->w), PG(g->b), dout, in, mean, rstd, PD(g->w), N, g->C, hw, g->G);
}

static void zero(UNet *u, float *p, int64_t n) { u->be->fill(u->ctx, p, 0.0f, n); }

/* Whether the backend has the fused norm_act ops both ways (a backward that uses the separate
 * ops needs their intermediates, which only the separate forward leaves behind). */
static int have_norm_act(const UNet *u) { return u->be->norm_act_forward && u->be->norm_act_backward; }

/* a = silu(groupnorm(x)) or, with ss, silu(modulate(groupnorm(x), ss)): the backend's fused op
 * when it has one (and, if keep, its fused backward too), else the three ops, leaving
 * n = groupnorm(x) in tn and m = modulate(n) in tm (tm unused without ss) */
static void norm_act_fwd(UNet *u, const Norm *g, float *a, float *tn, float *tm, float *mean, float *rstd,
                         const float *x, const float *ss, int64_t N, int64_t hw, int keep) {
    const Backend *be = u->be;
    if (keep ? have_norm_act(u) : be->norm_act_forward != NULL) {
        be->norm_act_forward(u->ctx, a, mean, rstd, x, PD(g->w), PD(g->b), ss, N, g->C, hw, g->G, GN_EPS);
        return;
    }
    gn_fwd(u, g, tn, mean, rstd, x, N, hw);
    if (ss) be->modulate_forward(u->ctx, tm, tn, ss, N, g->C, hw);
    be->silu_forward(u->ctx, a, ss ? tm : tn, N * g->C * hw);
}

/* Dropout mask {0, 1/(1-p)} for layer li of this step, drawn on the host (Philox stream
 * step * 4096 + layer) and uploaded. */
static void make_mask(UNet *u, Layer *L, int li, int64_t n) {
    float p = u->cfg.dropout, keep = 1.0f / (1.0f - p);
    rng_uniform_fill(u->host_mask, n, u->drop_seed, u->drop_step * 4096 + (uint64_t)li, 0);
    for (int64_t j = 0; j < n; j++) u->host_mask[j] = u->host_mask[j] >= p ? keep : 0.0f;
    u->be->upload(u->ctx, L->mask, u->host_mask, n);
}

/* ---- residual block ---- */

static void block_forward(UNet *u, Layer *L, int li, const float *x, int64_t N, int train) {
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    float **T = u->work;
    int64_t hw = L->rout * L->rout, C = L->cout, E = u->embed.E;
    norm_act_fwd(u, &L->norm0, T[2], T[1], NULL, L->mean0, L->rstd0, x, NULL, N, hw, 0); /* T2 = a0 */
    conv_fwd(u, &L->conv0, L->h0, T[2], N, L->rin);
    be->linear_forward(ctx, L->ss, u->embed.emb, PD(L->aff_w), PD(L->aff_b), N, E, 2 * C);
    norm_act_fwd(u, &L->norm1, T[5], T[0], T[4], L->mean1, L->rstd1, L->h0, L->ss, N, hw, 0); /* T5 = a1 */
    const float *a1 = T[5];
    L->mask_used = train && u->cfg.dropout > 0 && !u->inference;
    if (L->mask_used) {
        make_mask(u, L, li, N * C * hw);
        be->mul(ctx, T[3], T[5], L->mask, N * C * hw);
        a1 = T[3];
    }
    conv_fwd(u, &L->conv1, T[0], a1, N, L->rin);
    const float *sk = x;
    if (L->has_skip) {
        conv_fwd(u, &L->skip, T[4], x, N, L->rin);
        sk = T[4];
    }
    float *res = L->attn ? L->res : L->out;
    be->add(ctx, res, T[0], sk, N * C * hw);
    if (!L->attn) return;
    gn_fwd(u, &L->norm2, T[0], L->mean2, L->rstd2, res, N, hw);
    conv_fwd(u, &L->qkv, L->qkv_out, T[0], N, L->rin);
    be->attention_forward(ctx, L->o, L->att, L->qkv_out, N, C, hw, L->heads);
    conv_fwd(u, &L->proj, T[4], L->o, N, L->rin);
    be->add(ctx, L->out, res, T[4], N * C * hw);
}

/* The part of a block's backward after a1 (the activation conv1 reads) is back in T5: the
 * dropout mask, conv1's and the skip path's gradients (the skip's added into dx). Returns the
 * gradient of a1 (in T1, or T2 with dropout). */
static const float *block_conv1_bwd(UNet *u, Layer *L, float *dx, const float *x, int64_t N, const float *dres) {
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    float **T = u->work;
    int64_t n = N * L->cout * L->rout * L->rout;
    const float *a1 = T[5];
    if (L->mask_used) {
        be->mul(ctx, T[2], T[5], L->mask, n);
        a1 = T[2];
    }
    zero(u, T[1], n);
    conv_bwd(u, &L->conv1, T[1], dres, a1, N, L->rin);                          /* T1 = d(a1 dropped) */
    if (L->has_skip) conv_bwd(u, &L->skip, dx, dres, x, N, L->rin);
    else be->axpy(ctx, dx, 1.0f, dres, n);
    if (!L->mask_used) return T[1];
    zero(u, T[2], n);
    be->mul_backward(ctx, T[2], NULL, T[1], T[5], L->mask, n);
    return T[2];
}

/* block_backward after the attention part, with the backend's fused norm_act ops: the same
 * gradients as the separate ops below it (bit for bit on the CPU), fewer passes over memory */
static void block_backward_fused(UNet *u, Layer *L, float *dx, const float *x, int64_t N, const float *dres) {
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    float **T = u->work;
    int64_t hw = L->rout * L->rout, C = L->cout, E = u->embed.E, n = N * C * hw, ni = N * L->cin * hw;
    /* recompute a1 (and the dropped a1) */
    be->norm_act_forward(ctx, T[5], L->mean1, L->rstd1, L->h0, PD(L->norm1.w), PD(L->norm1.b), L->ss, N, C, hw,
                         L->norm1.G, GN_EPS);                                    /* T5 = a1 */
    const float *da1 = block_conv1_bwd(u, L, dx, x, N, dres);
    zero(u, T[5], n);
    zero(u, L->dss, N * 2 * C);
    be->norm_act_backward(ctx, T[5], PG(L->norm1.w), PG(L->norm1.b), L->dss, da1, L->h0, L->mean1, L->rstd1,
                          PD(L->norm1.w), PD(L->norm1.b), L->ss, N, C, hw, L->norm1.G); /* T5 = dh0 */
    be->linear_backward(ctx, u->embed.demb, PG(L->aff_w), PG(L->aff_b), L->dss, u->embed.emb, PD(L->aff_w), N, E,
                        2 * C);
    be->norm_act_forward(ctx, T[2], L->mean0, L->rstd0, x, PD(L->norm0.w), PD(L->norm0.b), NULL, N, L->cin, hw,
                         L->norm0.G, GN_EPS);                                    /* T2 = a0 */
    zero(u, T[3], ni);
    conv_bwd(u, &L->conv0, T[3], T[5], T[2], N, L->rin);                        /* T3 = da0 */
    be->norm_act_backward(ctx, dx, PG(L->norm0.w), PG(L->norm0.b), NULL, T[3], x, L->mean0, L->rstd0,
                          PD(L->norm0.w), PD(L->norm0.b), NULL, N, L->cin, hw, L->norm0.G);
}

/* Adds the input gradient into dx (N, cin, r, r). The block's output gradient is L->dout. */
static void block_backward(UNet *u, Layer *L, float *dx, const float *x, int64_t N) {
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    float **T = u->work;
    int64_t hw = L->rout * L->rout, C = L->cout, E = u->embed.E, n = N * C * hw;
    const float *dres = L->dout;
    const float *res = L->attn ? L->res : L->out;
    if (L->attn) {
        zero(u, T[0], n);
        conv_bwd(u, &L->proj, T[0], L->dout, L->o, N, L->rin);                 /* T0 = do */
        zero(u, T[1], 3 * n);
        be->attention_backward(ctx, T[1], T[0], L->qkv_out, L->att, N, C, hw, L->heads); /* T1 = dqkv */
        gn_fwd(u, &L->norm2, T[2], L->mean2, L->rstd2, res, N, hw);             /* T2 = n2 */
        zero(u, T[0], n);
        conv_bwd(u, &L->qkv, T[0], T[1], T[2], N, L->rin);                     /* T0 = dn2 */
        be->copy(ctx, T[3], L->dout, n);
        gn_bwd(u, &L->norm2, T[3], T[0], res, L->mean2, L->rstd2, N, hw);       /* T3 = dres */
        dres = T[3];
    }
    if (have_norm_act(u)) {
        block_backward_fused(u, L, dx, x, N, dres);
        return;
    }
    /* recompute n1, m1, a1 (and the dropped a1) */
    gn_fwd(u, &L->norm1, T[0], L->mean1, L->rstd1, L->h0, N, hw);               /* T0 = n1 */
    be->modulate_forward(ctx, T[4], T[0], L->ss, N, C, hw);                     /* T4 = m1 */
    be->silu_forward(ctx, T[5], T[4], n);                                       /* T5 = a1 */
    const float *da1 = block_conv1_bwd(u, L, dx, x, N, dres);
    zero(u, T[3], n);
    be->silu_backward(ctx, T[3], da1, T[4], n);                                 /* T3 = dm1 */
    zero(u, T[4], n);
    zero(u, L->dss, N * 2 * C);
    be->modulate_backward(ctx, T[4], L->dss, T[3], T[0], L->ss, N, C, hw);      /* T4 = dn1 */
    be->linear_backward(ctx, u->embed.demb, PG(L->aff_w), PG(L->aff_b), L->dss, u->embed.emb, PD(L->aff_w), N, E,
                        2 * C);
    zero(u, T[5], n);
    gn_bwd(u, &L->norm1, T[5], T[4], L->h0, L->mean1, L->rstd1, N, hw);          /* T5 = dh0 */
    int64_t ni = N * L->cin * hw;
    gn_fwd(u, &L->norm0, T[1], L->mean0, L->rstd0, x, N, hw);                   /* T1 = n0 */
    be->silu_forward(ctx, T[2], T[1], ni);                                      /* T2 = a0 */
    zero(u, T[3], ni);
    conv_bwd(u, &L->conv0, T[3], T[5], T[2], N, L->rin);                        /* T3 = da0 */
    zero(u, T[2], ni);
    be->silu_backward(ctx, T[2], T[3], T[1], ni);                               /* T2 = dn0 */
    gn_bwd(u, &L->norm0, dx, T[2], x, L->mean0, L->rstd0, N, hw);
}

/* ---- the network ---- */

/* Input of layer i (decoder blocks: the concatenation, recomputed into xcat). */
static const float *layer_input(UNet *u, int i, int64_t N) {
    if (i == 0) return u->x_in;
    Layer *L = &u->layers[i];
    const float *prev = u->layers[i - 1].out;
    if (L->skip_from < 0) return prev;
    Layer *S = &u->layers[L->skip_from];
    int64_t hw = L->rin * L->rin;
    u->be->concat_forward(u->ctx, u->xcat, prev, S->out, N, L->ch_h, S->cout, hw);
    return u->xcat;
}

void unet_forward(UNet *u, float *out, const float *x_in, const float *c_noise, const float *cond, int64_t N,
                  int train) {
    MSD_CHECK(u->slab != NULL && N > 0 && N <= u->cap);
    MSD_CHECK(unet_config_cdim(&u->cfg) == 0 || cond != NULL);
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    u->x_in = x_in;
    u->last_n = N;
    if (train && u->cfg.dropout > 0) u->drop_step++;
    edm_embed_forward(&u->embed, &u->ps, c_noise, cond, N);
    for (int i = 0; i < u->n_layers; i++) {
        Layer *L = &u->layers[i];
        const float *in = layer_input(u, i, N);
        switch (L->kind) {
        case LAYER_CONV:
        case LAYER_DOWN:
            conv_fwd(u, &L->conv, L->out, in, N, L->rin);
            break;
        case LAYER_UP:
            be->upsample2x_forward(ctx, u->work[1], in, N, L->cin, L->rin, L->rin);
            conv_fwd(u, &L->conv, L->out, u->work[1], N, L->rout);
            break;
        default:
            block_forward(u, L, i, in, N, train);
        }
    }
    Layer *last = &u->layers[u->n_layers - 1];
    int64_t hw = last->rout * last->rout;
    norm_act_fwd(u, &u->out_norm, u->work[4], u->work[0], NULL, u->out_mean, u->out_rstd, last->out, NULL, N, hw, 0);
    conv_fwd(u, &u->out_conv, out, u->work[4], N, last->rout);
}

const float *unet_bottleneck(const UNet *u) { return u->slab ? u->layers[u->mid1].out : NULL; }

void unet_bottleneck_shape(const UNet *u, int64_t chw[3]) {
    const Layer *L = &u->layers[u->mid1];
    chw[0] = L->cout;
    chw[1] = chw[2] = L->rout;
}

void unet_backward(UNet *u, float *dx, const float *dout, const float *dbottleneck, int64_t N) {
    MSD_CHECK(u->slab != NULL && !u->inference && N == u->last_n);
    const Backend *be = u->be;
    BackendCtx *ctx = u->ctx;
    float **T = u->work;
    zero(u, u->embed.demb, N * u->embed.E);
    for (int i = 0; i < u->n_enc; i++) {
        Layer *L = &u->layers[i];
        zero(u, L->dout, N * L->cout * L->rout * L->rout);
    }
    /* output head */
    Layer *last = &u->layers[u->n_layers - 1];
    int64_t hw = last->rout * last->rout, n = N * last->cout * hw;
    norm_act_fwd(u, &u->out_norm, T[4], T[0], NULL, u->out_mean, u->out_rstd, last->out, NULL, N, hw, 1);
    zero(u, T[5], n);
    conv_bwd(u, &u->out_conv, T[5], dout, T[4], N, last->rout);
    zero(u, last->dout, n);
    if (have_norm_act(u)) {
        be->norm_act_backward(ctx, last->dout, PG(u->out_norm.w), PG(u->out_norm.b), NULL, T[5], last->out,
                              u->out_mean, u->out_rstd, PD(u->out_norm.w), PD(u->out_norm.b), NULL, N, last->cout, hw,
                              u->out_norm.G);
    } else {
        zero(u, T[4], n);
        be->silu_backward(ctx, T[4], T[5], T[0], n);
        gn_bwd(u, &u->out_norm, last->dout, T[4], last->out, u->out_mean, u->out_rstd, N, hw);
    }

    for (int i = u->n_layers - 1; i >= 0; i--) {
        Layer *L = &u->layers[i];
        if (i == u->mid1 && dbottleneck) be->axpy(ctx, L->dout, 1.0f, dbottleneck, N * L->cout * L->rout * L->rout);
        Layer *P = i > 0 ? &u->layers[i - 1] : NULL;
        /* the previous layer's gradient buffer: ping-pong buffers start from zero here */
        float *dprev = P ? P->dout : dx;
        if (P && i - 1 >= u->n_enc) zero(u, dprev, N * P->cout * P->rout * P->rout);
        const float *in = layer_input(u, i, N);
        switch (L->kind) {
        case LAYER_CONV:
        case LAYER_DOWN:
            conv_bwd(u, &L->conv, dprev, L->dout, in, N, L->rin);
            break;
        case LAYER_UP: {
            int64_t nu = N * L->cin * L->rout * L->rout;
            be->upsample2x_forward(ctx, T[1], in, N, L->cin, L->rin, L->rin);
            zero(u, T[2], nu);
            conv_bwd(u, &L->conv, T[2], L->dout, T[1], N, L->rout);
            be->upsample2x_backward(ctx, dprev, T[2], N, L->cin, L->rin, L->rin);
            break;
        }
        default:
            if (L->skip_from < 0) {
                block_backward(u, L, dprev, in, N);
            } else {
                Layer *S = &u->layers[L->skip_from];
                int64_t nc = N * L->cin * L->rin * L->rin;
                zero(u, u->dxcat, nc);
                block_backward(u, L, u->dxcat, in, N);
                be->concat_backward(ctx, dprev, S->dout, u->dxcat, N, L->ch_h, S->cout, L->rin * L->rin);
            }
        }
    }
    edm_embed_backward(&u->embed, &u->ps, N);
}

/* ---- EdmNet adapter ---- */

static void unet_net_forward(void *self, float *out, const float *x_in, const float *c_noise, const float *cond,
                             int64_t N, int train) {
    unet_forward(self, out, x_in, c_noise, cond, N, train);
}
static void unet_net_backward(void *self, float *dx_in, const float *dout, const float *dextra, int64_t N) {
    unet_backward(self, dx_in, dout, dextra, N);
}
static const float *unet_net_bottleneck(const void *self) { return unet_bottleneck(self); }

EdmNet unet_edm_net(UNet *u) {
    EdmNet n;
    memset(&n, 0, sizeof n);
    int64_t chw[3];
    unet_bottleneck_shape(u, chw);
    n.self = u;
    n.params = &u->ps;
    n.dim = (int64_t)u->cfg.in_ch * u->cfg.res * u->cfg.res;
    n.label_dim = u->cfg.label_dim;
    n.cond_dim = u->cfg.cond_dim;
    n.forward = unet_net_forward;
    n.backward = unet_net_backward;
    n.bottleneck = unet_net_bottleneck;
    n.bottleneck_dim = chw[0] * chw[1] * chw[2];
    return n;
}

/* ---- cost ---- */

double unet_forward_flops(const UNetConfig *cfg) {
    UNet *u = msd_calloc(1, sizeof *u);
    u->cfg = *cfg;
    params_init(&u->ps);
    char err[256];
    MSD_CHECK(unet_build(u, err, sizeof err) == 0);
    double E = u->embed.E, f = 0;
    f += 2.0 * (u->embed.noise_ch * E + E * E + u->embed.cdim * E);
    for (int i = 0; i < u->n_layers; i++) {
        Layer *L = &u->layers[i];
        double hw = (double)(L->rout * L->rout), ci = (double)L->cin, co = (double)L->cout;
        if (L->kind != LAYER_BLOCK) {
            f += 2.0 * co * hw * ci * 9;
            continue;
        }
        f += 2.0 * co * hw * ci * 9 + 2.0 * co * hw * co * 9 + 2.0 * E * 2 * co;
        if (L->has_skip) f += 2.0 * co * hw * ci;
        if (L->attn) f += 2.0 * 3 * co * co * hw + 2.0 * co * co * hw + 4.0 * hw * hw * co;
    }
    Layer *last = &u->layers[u->n_layers - 1];
    f += 2.0 * cfg->in_ch * (double)(last->rout * last->rout) * (double)last->cout * 9;
    free(u->layers);
    params_free(&u->ps);
    free(u);
    return f;
}
