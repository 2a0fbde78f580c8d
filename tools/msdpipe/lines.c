/* lines.c: `msdpipe up`'s standard input forwarding. Each stdin line goes to the pipeline's
 * stdin process as a LINE request (tensor "text", u8) with ids 1, 2, 3...; replies may come
 * back in any order and are printed to stdout in input order, one output line per input
 * line. At most LINES_WINDOW lines are in flight; stdin is not read while the window is full.
 * A line the process answers with an error (or one too long to send, or holding a NUL byte)
 * prints as an error line on stdout, `error: REASON` (or the reply's "error_line" text when the
 * process formats its own, e.g. a JSON object), and a warning on stderr, so output line N
 * still belongs to input line N and says why. Both show control bytes as \xNN.
 *
 * Not here: when to stop at EOF (supervise.c waits for the replies while one came within
 * reply_timeout: eof_at moves to each reply after EOF, so a long queue that keeps answering
 * is not cut off). */
#include "msdpipe.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lines_init(Lines *q, const char *target) {
    memset(q, 0, sizeof *q);
    snprintf(q->target, sizeof q->target, "%s", target);
    q->target_len = (int)strlen(q->target);
    q->open = 1;
    q->next_id = q->next_print = 1;
    q->inbuf = msd_malloc(LINES_MAX_BYTES);
}

void lines_free(Lines *q) {
    for (int i = 0; i < LINES_WINDOW; i++) free(q->slots[i].text);
    free(q->inbuf);
    memset(q, 0, sizeof *q);
}

int lines_outstanding(const Lines *q) { return (int)(q->next_id - q->next_print); }

static int window_full(const Lines *q) { return q->next_id - q->next_print >= LINES_WINDOW; }

int lines_want_input(const Lines *q) {
    return !q->eof && !window_full(q) && q->inlen < LINES_MAX_BYTES && !memchr(q->inbuf, '\n', q->inlen);
}

/* Print every answered line at the head of the window. */
static int flush_in_order(Lines *q) {
    int wrote = 0;
    while (q->next_print < q->next_id) {
        LineSlot *s = &q->slots[q->next_print % LINES_WINDOW];
        if (!s->have) break;
        if (s->len) fwrite(s->text, 1, s->len, stdout);
        if (!s->len || s->text[s->len - 1] != '\n') fputc('\n', stdout);
        free(s->text);
        memset(s, 0, sizeof *s);
        q->next_print++;
        wrote = 1;
    }
    if (wrote && (fflush(stdout) != 0 || ferror(stdout))) {
        log_error("cannot write to stdout: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* in with control bytes (ESC, NUL, ...) and DEL written as \xNN, so a warning never carries
 * terminal escapes from stdin or from a peer's message onto the user's terminal */
static void printable(char *out, size_t cap, const char *in) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < cap; p++) {
        if (*p < 0x20 || *p == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *p);
        else out[o++] = (char)*p;
    }
    out[o < cap ? o : cap - 1] = 0;
}

/* Line `id` failed: the warning (fmt with a, b) on stderr; on stdout `line` when given (the
 * process's own error line), else `error: ` and `reason` (NULL: the warning's text). */
static void fail_line(Lines *q, uint64_t id, const char *line, const char *reason, const char *fmt, const char *a,
                      const char *b) {
    LineSlot *s = &q->slots[id % LINES_WINDOW];
    char raw[512], msg[2048];
    snprintf(raw, sizeof raw, fmt, a, b);
    printable(msg, sizeof msg, raw);
    log_warn("line %llu: %s", (unsigned long long)id, msg);
    char out[2048];
    if (line) {
        printable(out, sizeof out, line);
    } else {
        memcpy(out, "error: ", 7);
        if (reason) printable(out + 7, sizeof out - 7, reason);
        else {
            size_t k = strnlen(msg, sizeof out - 8);
            memcpy(out + 7, msg, k);
            out[7 + k] = 0;
        }
    }
    free(s->text);
    s->text = msd_strdup(out);
    s->len = strlen(out);
    s->have = 1;
    s->failed = 1;
    q->errors++;
}

static void send_line(Lines *q, void *ctl, const char *text, size_t len) {
    uint64_t id = q->next_id++;
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_LINE, id);
    m.nrouting = 1;
    m.routing_len[0] = (size_t)q->target_len;
    memcpy(m.routing[0], q->target, (size_t)q->target_len);
    int64_t shape[1] = {(int64_t)len};
    wire_msg_add(&m, "text", WIRE_U8, 1, shape, text);
    char err[256];
    if (wire_send(ctl, &m, 0, 0, err, sizeof err) != WIRE_OK) fail_line(q, id, NULL, NULL, "could not send it to %s: %s", q->target, err);
}

int lines_pump(Lines *q, void *ctl) {
    size_t start = 0;
    while (!window_full(q)) {
        char *nl = memchr(q->inbuf + start, '\n', q->inlen - start);
        size_t end = nl ? (size_t)(nl - q->inbuf) : q->inlen;
        if (!nl && !(q->eof && end > start)) break;   /* an unfinished line waits for more */
        if (q->discarding) {
            q->discarding = 0;
        } else {
            size_t len = end - start;
            if (len > 0 && q->inbuf[start + len - 1] == '\r') len--;
            const char *nul = memchr(q->inbuf + start, 0, len);
            if (nul) {
                /* text lines carry no NUL: a reader of C strings would see only its front part */
                char col[32];
                snprintf(col, sizeof col, "%zu", (size_t)(nul - (q->inbuf + start)) + 1);
                fail_line(q, q->next_id++, NULL, NULL, "line has a NUL byte (column %s)%s; not sent", col, "");
            } else {
                send_line(q, ctl, q->inbuf + start, len);
            }
        }
        start = nl ? end + 1 : end;
    }
    if (start > 0) {
        memmove(q->inbuf, q->inbuf + start, q->inlen - start);
        q->inlen -= start;
    }
    if (q->inlen == LINES_MAX_BYTES && !memchr(q->inbuf, '\n', q->inlen) && !window_full(q)) {
        /* a line longer than the buffer: answer it locally, drop the rest of it */
        uint64_t id = q->next_id++;
        char max[32];
        snprintf(max, sizeof max, "%d", LINES_MAX_BYTES - 1);
        fail_line(q, id, NULL, NULL, "line too long (max %s bytes)%s; not sent", max, "");
        q->discarding = 1;
        q->inlen = 0;
    }
    if (q->eof && q->inlen == 0) q->open = 0;
    return flush_in_order(q);
}

int lines_read(Lines *q, void *ctl) {
    ssize_t r = read(0, q->inbuf + q->inlen, LINES_MAX_BYTES - q->inlen);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (r < 0) log_warn("reading stdin: %s; treating it as the end of input", strerror(errno));
    return lines_take(q, r > 0 ? (size_t)r : 0, ctl);
}

int lines_take(Lines *q, size_t n, void *ctl) {
    MSD_CHECK(n <= LINES_MAX_BYTES - q->inlen);
    if (n == 0) {
        q->eof = 1;
        q->eof_at = msd_now();
    } else {
        q->inlen += n;
    }
    if (q->discarding) {
        char *nl = memchr(q->inbuf, '\n', q->inlen);
        if (!nl) {
            q->inlen = 0;
        } else {
            size_t rest = q->inlen - (size_t)(nl + 1 - q->inbuf);
            memmove(q->inbuf, nl + 1, rest);
            q->inlen = rest;
            q->discarding = 0;
        }
    }
    return lines_pump(q, ctl);
}

int lines_reply(Lines *q, const WireMsg *m) {
    if (m->id < q->next_print || m->id >= q->next_id) {
        log_warn("%s answered line %llu, which is not waiting for an answer", q->target, (unsigned long long)m->id);
        return 0;
    }
    LineSlot *s = &q->slots[m->id % LINES_WINDOW];
    if (s->have) return 0;
    if (q->eof) q->eof_at = msd_now();
    if (m->op == WIRE_OP_ERROR || m->status != WIRE_STATUS_OK) {
        char id[32];
        snprintf(id, sizeof id, "%s", wire_status_name(m->status));
        const char *why = m->error[0] ? m->error : "(no message)";
        /* the process's own error line: one line of text (a NUL or newline ends it) */
        const WireTensor *el = wire_msg_find(m, "error_line");
        char line[2048];
        const char *own = NULL;
        if (el && el->dtype == WIRE_U8 && el->nbytes) {
            size_t n = el->nbytes < sizeof line - 1 ? el->nbytes : sizeof line - 1;
            memcpy(line, el->data, n);
            line[n] = 0;
            line[strcspn(line, "\r\n")] = 0;
            own = line;
        }
        fail_line(q, m->id, own, why, "answered with status %s: %s", id, why);
        return flush_in_order(q);
    }
    const WireTensor *t = wire_msg_find(m, "text");
    if (!t || t->dtype != WIRE_U8) {
        t = NULL;
        for (int i = 0; i < m->ntensors; i++)
            if (m->tensors[i].dtype == WIRE_U8) { t = &m->tensors[i]; break; }
    }
    s->have = 1;
    s->len = t ? t->nbytes : 0;
    s->text = msd_malloc(s->len + 1);
    if (s->len) memcpy(s->text, t->data, s->len);
    s->text[s->len] = 0;
    return flush_in_order(q);
}
