/* fuzz_pickle_refs.c: libFuzzer target for the pickle opcode walker
 * (src/pickle_refs.c), which reads pickles of any origin.
 *
 * Checks, beyond "no crash, no sanitizer report, no leak": the result is
 * one of 1 or 0 (the callback never fails here), every (module, name) the
 * walker reports lies inside the input, and the walk is deterministic (a
 * second walk reports the same pairs).
 */
#include "pickle_refs.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *lo, *hi;
    size_t count;
    uint64_t digest;        /* of every pair reported, in order */
} seen;

static void
mix(uint64_t *h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *h = (*h ^ (unsigned char)s[i]) * 1099511628211ULL;
    }
    *h = (*h ^ n) * 1099511628211ULL;
}

static int
check_ref(void *arg, const char *mod, size_t mlen, const char *name,
          size_t nlen)
{
    seen *s = arg;
    const unsigned char *m = (const unsigned char *)mod;
    const unsigned char *nm = (const unsigned char *)name;
    if (m < s->lo || mlen > (size_t)(s->hi - m)
        || nm < s->lo || nlen > (size_t)(s->hi - nm)) {
        abort();
    }
    mix(&s->digest, mod, mlen);
    mix(&s->digest, name, nlen);
    s->count++;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    seen a = {data, data + size, 0, 14695981039346656037ULL};
    seen b = a;
    int r = chkpt_pickle_refs(data, size, check_ref, &a);
    if (r != 0 && r != 1) {
        abort();
    }
    if (chkpt_pickle_refs(data, size, check_ref, &b) != r
        || a.count != b.count || a.digest != b.digest) {
        abort();
    }
    return 0;
}
