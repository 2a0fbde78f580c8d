/* json.c: the strict JSON reader of json.h (RFC 8259: UTF-8 checked, \u escapes with
 * surrogate pairs, numbers kept as text plus an exact unsigned value when they are one, depth
 * bounded). Errors read "LABEL: bad JSON header at byte N: what". */
#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct JParser {
    int max_depth;
    const unsigned char *p;
    size_t len, i;
    const char *label;
    char *err;
    size_t errlen;
} JParser;

static int jerr(JParser *jp, size_t pos, const char *what) {
    return msd_errf(jp->err, jp->errlen, "%s: bad JSON header at byte %zu: %s", jp->label, pos, what);
}

void json_free(JsonValue *v) {
    free(v->s);
    for (int i = 0; i < v->n; i++) {
        json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static void jskip_ws(JParser *jp) {
    while (jp->i < jp->len) {
        unsigned char c = jp->p[jp->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        jp->i++;
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int jhex4(JParser *jp, uint32_t *out) {
    if (jp->len - jp->i < 4) return jerr(jp, jp->i, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(jp->p[jp->i + (size_t)k]);
        if (h < 0) return jerr(jp, jp->i + (size_t)k, "bad hex digit in \\u escape");
        v = v * 16 + (uint32_t)h;
    }
    jp->i += 4;
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (max bytes left), or 0 if invalid. */
static size_t utf8_valid(const unsigned char *p, size_t left) {
    unsigned char c = p[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (left < n) return 0;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* jp->i is at the opening quote. The decoded string is never longer than the raw one. */
static int jstring(JParser *jp, char **out) {
    size_t start = jp->i++;
    size_t end = jp->i;
    while (end < jp->len && jp->p[end] != '"') end += jp->p[end] == '\\' ? 2 : 1;
    if (end >= jp->len) return jerr(jp, start, "unterminated string");
    char *s = msd_malloc(end - jp->i + 1);
    size_t o = 0;
    while (jp->p[jp->i] != '"') {
        unsigned char c = jp->p[jp->i];
        if (c < 0x20) { free(s); return jerr(jp, jp->i, "control character in string"); }
        if (c != '\\') {
            size_t n = utf8_valid(jp->p + jp->i, jp->len - jp->i);
            if (!n) { free(s); return jerr(jp, jp->i, "invalid UTF-8 in string"); }
            memcpy(s + o, jp->p + jp->i, n);
            o += n;
            jp->i += n;
            continue;
        }
        size_t esc = jp->i++;
        c = jp->p[jp->i++];
        uint32_t cp;
        switch (c) {
        case '"': s[o++] = '"'; break;
        case '\\': s[o++] = '\\'; break;
        case '/': s[o++] = '/'; break;
        case 'b': s[o++] = '\b'; break;
        case 'f': s[o++] = '\f'; break;
        case 'n': s[o++] = '\n'; break;
        case 'r': s[o++] = '\r'; break;
        case 't': s[o++] = '\t'; break;
        case 'u':
            if (jhex4(jp, &cp)) { free(s); return -1; }
            if (cp >= 0xDC00 && cp <= 0xDFFF) { free(s); return jerr(jp, esc, "lone low surrogate"); }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (jp->len - jp->i < 2 || jp->p[jp->i] != '\\' || jp->p[jp->i + 1] != 'u') {
                    free(s);
                    return jerr(jp, esc, "high surrogate without a low one");
                }
                jp->i += 2;
                if (jhex4(jp, &lo)) { free(s); return -1; }
                if (lo < 0xDC00 || lo > 0xDFFF) { free(s); return jerr(jp, esc, "bad surrogate pair"); }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) { free(s); return jerr(jp, esc, "\\u0000 in string"); }
            /* 6 raw bytes (\uXXXX) give at most 3 decoded, 12 (a pair) give 4: fits. */
            o += utf8_put(s + o, cp);
            break;
        default: free(s); return jerr(jp, esc, "bad escape in string");
        }
    }
    jp->i++; /* closing quote */
    s[o] = 0;
    *out = s;
    return 0;
}

static int jnumber(JParser *jp, JsonValue *v) {
    size_t start = jp->i;
    int neg = 0, frac = 0, ovf = 0;
    uint64_t u = 0;
    if (jp->p[jp->i] == '-') { neg = 1; jp->i++; }
    if (jp->i >= jp->len || jp->p[jp->i] < '0' || jp->p[jp->i] > '9') return jerr(jp, start, "bad number");
    if (jp->p[jp->i] == '0') {
        jp->i++;
        if (jp->i < jp->len && jp->p[jp->i] >= '0' && jp->p[jp->i] <= '9')
            return jerr(jp, start, "number with a leading zero");
    } else {
        while (jp->i < jp->len && jp->p[jp->i] >= '0' && jp->p[jp->i] <= '9') {
            uint64_t d = (uint64_t)(jp->p[jp->i] - '0');
            if (u > (UINT64_MAX - d) / 10) ovf = 1;
            else u = u * 10 + d;
            jp->i++;
        }
    }
    if (jp->i < jp->len && jp->p[jp->i] == '.') {
        frac = 1;
        jp->i++;
        size_t d0 = jp->i;
        while (jp->i < jp->len && jp->p[jp->i] >= '0' && jp->p[jp->i] <= '9') jp->i++;
        if (jp->i == d0) return jerr(jp, start, "bad number: no digits after '.'");
    }
    if (jp->i < jp->len && (jp->p[jp->i] == 'e' || jp->p[jp->i] == 'E')) {
        frac = 1;
        jp->i++;
        if (jp->i < jp->len && (jp->p[jp->i] == '+' || jp->p[jp->i] == '-')) jp->i++;
        size_t d0 = jp->i;
        while (jp->i < jp->len && jp->p[jp->i] >= '0' && jp->p[jp->i] <= '9') jp->i++;
        if (jp->i == d0) return jerr(jp, start, "bad number: no exponent digits");
    }
    v->type = JSON_NUM;
    v->is_uint = !neg && !frac && !ovf;
    v->u = u;
    return 0;
}

static int jvalue(JParser *jp, JsonValue *v, int depth);

static void jpush(JsonValue *v) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 4;
        v->items = realloc(v->items, (size_t)v->cap * sizeof *v->items);
        if (!v->items) msd_die("out of memory parsing a JSON header");
        if (v->type == JSON_OBJ) {
            v->keys = realloc(v->keys, (size_t)v->cap * sizeof *v->keys);
            if (!v->keys) msd_die("out of memory parsing a JSON header");
        }
    }
    memset(&v->items[v->n], 0, sizeof v->items[v->n]);
    if (v->type == JSON_OBJ) v->keys[v->n] = NULL;
    v->n++;
}

static int jcontainer(JParser *jp, JsonValue *v, int depth) {
    int obj = jp->p[jp->i] == '{';
    char close = obj ? '}' : ']';
    if (depth >= jp->max_depth) return jerr(jp, jp->i, "nested deeper than the safetensors format allows");
    v->type = obj ? JSON_OBJ : JSON_ARR;
    jp->i++;
    jskip_ws(jp);
    if (jp->i < jp->len && jp->p[jp->i] == close) { jp->i++; return 0; }
    for (;;) {
        jskip_ws(jp);
        if (jp->i >= jp->len) return jerr(jp, jp->i, obj ? "unterminated object" : "unterminated array");
        jpush(v);
        if (obj) {
            if (jp->p[jp->i] != '"') return jerr(jp, jp->i, "expected a string key");
            if (jstring(jp, &v->keys[v->n - 1])) return -1;
            jskip_ws(jp);
            if (jp->i >= jp->len || jp->p[jp->i] != ':') return jerr(jp, jp->i, "expected ':'");
            jp->i++;
            jskip_ws(jp);
        }
        if (jvalue(jp, &v->items[v->n - 1], depth + 1)) return -1;
        jskip_ws(jp);
        if (jp->i >= jp->len) return jerr(jp, jp->i, obj ? "unterminated object" : "unterminated array");
        if (jp->p[jp->i] == ',') { jp->i++; continue; }
        if (jp->p[jp->i] == close) { jp->i++; return 0; }
        return jerr(jp, jp->i, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jliteral(JParser *jp, const char *word, JsonType type, JsonValue *v) {
    size_t n = strlen(word);
    if (jp->len - jp->i < n || memcmp(jp->p + jp->i, word, n) != 0) return jerr(jp, jp->i, "unexpected character");
    jp->i += n;
    v->type = type;
    return 0;
}

static int jvalue(JParser *jp, JsonValue *v, int depth) {
    if (jp->i >= jp->len) return jerr(jp, jp->i, "unexpected end of header");
    v->pos = jp->i;
    unsigned char c = jp->p[jp->i];
    if (c == '{' || c == '[') return jcontainer(jp, v, depth);
    if (c == '"') { v->type = JSON_STR; return jstring(jp, &v->s); }
    if (c == '-' || (c >= '0' && c <= '9')) return jnumber(jp, v);
    if (c == 't') return jliteral(jp, "true", JSON_BOOL, v);
    if (c == 'f') return jliteral(jp, "false", JSON_BOOL, v);
    if (c == 'n') return jliteral(jp, "null", JSON_NULL, v);
    return jerr(jp, jp->i, "unexpected character");
}

int json_parse(JsonValue *root, const unsigned char *text, size_t len, int max_depth, const char *label, char *err,
               size_t errlen) {
    memset(root, 0, sizeof *root);
    JParser jp = {.max_depth = max_depth, .p = text, .len = len, .i = 0, .label = label, .err = err, .errlen = errlen};
    int rc = jvalue(&jp, root, 0);
    if (rc == 0) {
        jskip_ws(&jp);
        if (jp.i != jp.len) rc = jerr(&jp, jp.i, "trailing characters after the header object");
    }
    return rc;
}

int json_get(const JsonValue *obj, const char *key) {
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return i;
    return -1;
}
