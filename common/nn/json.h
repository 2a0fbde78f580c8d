/* json.h: a strict JSON reader for the safetensors header, small enough to audit: one value
 * into a tree of JsonValue (objects keep their keys in order; duplicate keys are the caller's
 * to reject), every input byte checked, containers nested at most max_depth deep, nothing
 * allocated beyond what the text itself holds. Used on untrusted files: it never aborts on
 * bad input.
 *
 * Not here: writing JSON (safetensors.c writes its header as serde_json does), numbers as
 * floats (a number is kept as an exact uint64 when it is a plain non-negative integer). For
 * JSON beyond this strict header, the project uses a maintained library. */
#ifndef MSD_JSON_H
#define MSD_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ } JsonType;

typedef struct JsonValue {
    JsonType type;
    size_t pos;           /* byte offset in the header, for messages */
    char *s;              /* JSON_STR: NUL-terminated UTF-8 (no embedded NUL) */
    int is_uint;          /* JSON_NUM: a plain non-negative integer that fits in u */
    uint64_t u;
    int n, cap;           /* JSON_ARR / JSON_OBJ: items */
    struct JsonValue *items;
    char **keys;          /* JSON_OBJ: keys[i] names items[i] */
} JsonValue;

/* Parse the one JSON value that is text[0, len) (JSON whitespace may follow it): 0 and *root
 * (free with json_free), or -1 with "LABEL: bad JSON header at byte N: ..." in err (*root
 * then holds nothing that needs freeing beyond json_free, which is safe to call). */
int json_parse(JsonValue *root, const unsigned char *text, size_t len, int max_depth, const char *label, char *err,
               size_t errlen);
void json_free(JsonValue *v); /* frees what v holds (not v itself) */
/* Index of key in the object obj, or -1. Linear: the header's objects are small. */
int json_get(const JsonValue *obj, const char *key);

#endif
