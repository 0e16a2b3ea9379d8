/* pickle_refs.c: the globals a pickle names (see pickle_refs.h).
 *
 * STACK_GLOBAL takes its module and name from the two values below the top
 * of the stack; the Pickler pushes them as strings just before, or fetches
 * them from the memo (BINGET) when the same module was named already. The
 * walker keeps only the last two values pushed (a string or "not a string")
 * and, for the memo, what each index stored: enough for what the Pickler
 * writes, without a real stack. Anything else it does not follow makes the
 * refs unknown rather than guessed.
 */
#include "pickle_refs.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
    size_t len;
    int is_str;
} strref;

typedef struct {
    const unsigned char *p;
    size_t n, i;
    strref last, prev;          /* the two values on top of the stack */
    strref *memo;
    size_t nmemo, capmemo;
    chkpt_pickle_ref_fn fn;
    void *arg;
} walker;

enum { WALK_STOP = 2, WALK_ON = 1, WALK_UNFOLLOWED = 0, WALK_FAILED = -1 };

static void
push(walker *w, const unsigned char *s, size_t len, int is_str)
{
    w->prev = w->last;
    w->last.p = (const char *)s;
    w->last.len = len;
    w->last.is_str = is_str;
}

static int
have(const walker *w, size_t k)
{
    return k <= w->n - w->i;
}

/* little-endian unsigned of k bytes at the cursor (caller checked have) */
static uint64_t
take_le(walker *w, size_t k)
{
    uint64_t v = 0;
    for (size_t j = k; j > 0; j--) {
        v = (v << 8) | w->p[w->i + j - 1];
    }
    w->i += k;
    return v;
}

/* Skips an argument of `lenbytes` length bytes then that many bytes; pushes
 * it as a string if is_str. */
static int
counted(walker *w, size_t lenbytes, int is_str)
{
    if (!have(w, lenbytes)) {
        return WALK_UNFOLLOWED;
    }
    uint64_t len = take_le(w, lenbytes);
    if (len > (uint64_t)(w->n - w->i)) {
        return WALK_UNFOLLOWED;
    }
    push(w, w->p + w->i, (size_t)len, is_str);
    w->i += (size_t)len;
    return WALK_ON;
}

/* Skips a fixed-size argument; pushes a non-string unless nopush. */
static int
fixed(walker *w, size_t k, int nopush)
{
    if (!have(w, k)) {
        return WALK_UNFOLLOWED;
    }
    w->i += k;
    if (!nopush) {
        push(w, NULL, 0, 0);
    }
    return WALK_ON;
}

/* MEMOIZE (idx_bytes 0: next index), BINPUT (1), LONG_BINPUT (4): the memo
 * slot remembers the top of the stack. */
static int
memo_put(walker *w, size_t idx_bytes)
{
    size_t idx = w->nmemo;
    if (idx_bytes) {
        if (!have(w, idx_bytes)) {
            return WALK_UNFOLLOWED;
        }
        idx = (size_t)take_le(w, idx_bytes);
    }
    /* Every memoized value costs the Pickler at least one byte, so a real
     * pickle's indices stay below its size: larger ones are not followed
     * (and cannot make the walker allocate without bound). */
    if (idx >= w->n) {
        return WALK_UNFOLLOWED;
    }
    if (idx >= w->capmemo) {
        size_t cap = w->capmemo ? w->capmemo : 64;
        while (cap <= idx) {
            cap *= 2;
        }
        strref *nm = realloc(w->memo, cap * sizeof(strref));
        if (nm == NULL) {
            return WALK_UNFOLLOWED;
        }
        memset(nm + w->capmemo, 0, (cap - w->capmemo) * sizeof(strref));
        w->memo = nm;
        w->capmemo = cap;
    }
    w->memo[idx] = w->last;
    if (idx >= w->nmemo) {
        w->nmemo = idx + 1;
    }
    return WALK_ON;
}

/* BINGET (1), LONG_BINGET (4): pushes what the slot remembered. */
static int
memo_get(walker *w, size_t idx_bytes)
{
    if (!have(w, idx_bytes)) {
        return WALK_UNFOLLOWED;
    }
    size_t idx = (size_t)take_le(w, idx_bytes);
    if (idx < w->nmemo) {
        strref r = w->memo[idx];
        push(w, (const unsigned char *)r.p, r.len, r.is_str);
    }
    else {
        push(w, NULL, 0, 0);
    }
    return WALK_ON;
}

static int
stack_global(walker *w)
{
    if (w->prev.is_str && w->last.is_str
        && w->fn(w->arg, w->prev.p, w->prev.len, w->last.p, w->last.len) < 0) {
        return WALK_FAILED;
    }
    push(w, NULL, 0, 0);
    return WALK_ON;
}

/* GLOBAL (protocols <= 3): "module\nname\n" */
static int
text_global(walker *w)
{
    const unsigned char *a = w->p + w->i, *end = w->p + w->n;
    const unsigned char *nl1 = memchr(a, '\n', (size_t)(end - a));
    if (nl1 == NULL) {
        return WALK_UNFOLLOWED;
    }
    const unsigned char *b = nl1 + 1;
    const unsigned char *nl2 = memchr(b, '\n', (size_t)(end - b));
    if (nl2 == NULL) {
        return WALK_UNFOLLOWED;
    }
    if (w->fn(w->arg, (const char *)a, (size_t)(nl1 - a), (const char *)b,
              (size_t)(nl2 - b)) < 0) {
        return WALK_FAILED;
    }
    w->i = (size_t)(nl2 + 1 - w->p);
    push(w, NULL, 0, 0);
    return WALK_ON;
}

/* One opcode: a flat dispatch on the opcode byte. */
static int
step(walker *w, unsigned char op)
{
    switch (op) {
    case '.':                                   /* STOP */
        return WALK_STOP;
    case 0x80: return fixed(w, 1, 1);           /* PROTO */
    case 0x95: return fixed(w, 8, 1);           /* FRAME */
    case 0x8c: return counted(w, 1, 1);         /* SHORT_BINUNICODE */
    case 'X':  return counted(w, 4, 1);         /* BINUNICODE */
    case 0x8d: return counted(w, 8, 1);         /* BINUNICODE8 */
    case 0x8e: case 0x96:                       /* BINBYTES8, BYTEARRAY8 */
        return counted(w, 8, 0);
    case 'U': case 'C': case 0x8a:              /* 1-byte length */
        return counted(w, 1, 0);
    case 'T': case 'B': case 0x8b:              /* 4-byte length */
        return counted(w, 4, 0);
    case 'J':  return fixed(w, 4, 0);           /* BININT */
    case 'K':  return fixed(w, 1, 0);           /* BININT1 */
    case 'M':  return fixed(w, 2, 0);           /* BININT2 */
    case 'G':  return fixed(w, 8, 0);           /* BINFLOAT */
    case 0x82: return fixed(w, 1, 0);           /* EXT1 */
    case 0x83: return fixed(w, 2, 0);           /* EXT2 */
    case 0x84: return fixed(w, 4, 0);           /* EXT4 */
    case 0x94: return memo_put(w, 0);           /* MEMOIZE */
    case 'q':  return memo_put(w, 1);           /* BINPUT */
    case 'r':  return memo_put(w, 4);           /* LONG_BINPUT */
    case 'h':  return memo_get(w, 1);           /* BINGET */
    case 'j':  return memo_get(w, 4);           /* LONG_BINGET */
    case 0x93: return stack_global(w);          /* STACK_GLOBAL */
    case 'c':  return text_global(w);           /* GLOBAL */
    /* no-argument opcodes */
    case '(': case '0': case '1': case '2': case 'N': case 'R': case 'b':
    case 'd': case '}': case 'e': case 'l': case ']': case 'o': case 's':
    case 't': case ')': case 'u': case 'a': case 0x81: case 0x85:
    case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90:
    case 0x91: case 0x92: case 0x97: case 0x98: case 'Q':
        push(w, NULL, 0, 0);
        return WALK_ON;
    default:
        /* text opcodes of protocol 0/1: not produced with protocol 5 */
        return WALK_UNFOLLOWED;
    }
}

int
chkpt_pickle_refs(const unsigned char *p, size_t n, chkpt_pickle_ref_fn fn,
                  void *arg)
{
    walker w;
    memset(&w, 0, sizeof(w));
    w.p = p;
    w.n = n;
    w.fn = fn;
    w.arg = arg;
    int r = WALK_ON;
    while (r == WALK_ON && w.i < w.n) {
        unsigned char op = w.p[w.i++];
        r = step(&w, op);
    }
    free(w.memo);
    return r == WALK_STOP ? 1 : r;
}
