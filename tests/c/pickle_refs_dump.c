/* pickle_refs_dump.c: prints what the pickle opcode walker
 * (src/store/pickle_refs.c) finds in each of the inputs on stdin, for
 * tests/test_pickle_walker.py, which compares it with a walk of the same
 * bytes by Python's pickletools.
 *
 * Input: any number of records, each an 8-byte little-endian length then
 * that many bytes. Output, per record: "result R N" (R what
 * chkpt_pickle_refs returned, N the pairs reported), then N lines
 * "MODULE NAME", each in hex (the strings are bytes from the pickle).
 */
#include "pickle_refs.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    char *text;
    size_t len, cap;
    size_t count;
} out;

static int
put_hex(out *o, const char *s, size_t n)
{
    if (o->len + 2 * n + 2 >= o->cap) {
        size_t cap = (o->cap + 2 * n + 2) * 2;
        char *t = realloc(o->text, cap);
        if (t == NULL) {
            return -1;
        }
        o->text = t;
        o->cap = cap;
    }
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        o->text[o->len++] = digits[c >> 4];
        o->text[o->len++] = digits[c & 15];
    }
    return 0;
}

static int
on_ref(void *arg, const char *mod, size_t mlen, const char *name, size_t nlen)
{
    out *o = arg;
    if (put_hex(o, mod, mlen) < 0) {
        return -1;
    }
    o->text[o->len++] = ' ';
    if (put_hex(o, name, nlen) < 0) {
        return -1;
    }
    o->text[o->len++] = '\n';
    o->count++;
    return 0;
}

int
main(void)
{
    unsigned char head[8];
    while (fread(head, 1, 8, stdin) == 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) {
            n = (n << 8) | head[i];
        }
        unsigned char *data = malloc(n ? (size_t)n : 1);
        if (data == NULL || fread(data, 1, (size_t)n, stdin) != n) {
            fprintf(stderr, "pickle_refs_dump: short input\n");
            free(data);
            return 2;
        }
        out o = {NULL, 0, 0, 0};
        int r = chkpt_pickle_refs(data, (size_t)n, on_ref, &o);
        printf("result %d %zu\n", r, o.count);
        if (o.len) {
            fwrite(o.text, 1, o.len, stdout);
        }
        free(o.text);
        free(data);
    }
    return ferror(stdin) ? 2 : 0;
}
