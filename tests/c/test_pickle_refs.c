/* test_pickle_refs.c: unit tests of the pickle opcode walker
 * (src/pickle_refs.c).
 *
 * Run with `make -C tests/c run` (under valgrind, so every read outside the
 * pickle shows: each input is copied into a buffer of exactly its size).
 * The pickles were written by CPython's pickle.dumps. The last line is
 * "N passed, M failed".
 */
#include "pickle_refs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond); \
            failures++; \
        } \
    } while (0)

/* pickle.dumps([collections.OrderedDict, collections.Counter,
 *               os.path.join], protocol=5): the second 'collections' comes
 * from the memo (BINGET 1) */
static const char P5[] =
    "\x80\x05\x95\x46\x00\x00\x00\x00\x00\x00\x00\x5d\x94\x28\x8c\x0b\x63"
    "\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x94\x8c\x0b\x4f\x72\x64\x65"
    "\x72\x65\x64\x44\x69\x63\x74\x94\x93\x94\x68\x01\x8c\x07\x43\x6f\x75"
    "\x6e\x74\x65\x72\x94\x93\x94\x8c\x09\x70\x6f\x73\x69\x78\x70\x61\x74"
    "\x68\x94\x8c\x04\x6a\x6f\x69\x6e\x94\x93\x94\x65\x2e";
/* pickle.dumps([collections.OrderedDict, collections.Counter], protocol=2):
 * GLOBAL opcodes */
static const char P2[] =
    "\x80\x02\x5d\x71\x00\x28\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e"
    "\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x01\x63"
    "\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x43\x6f\x75\x6e\x74"
    "\x65\x72\x0a\x71\x02\x65\x2e";
/* pickle.dumps([collections.OrderedDict], protocol=0): text opcodes */
static const char P0[] =
    "\x28\x6c\x70\x30\x0a\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73"
    "\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x70\x31\x0a\x61"
    "\x2e";

#define MAX_REFS 8

typedef struct {
    int n;
    char refs[MAX_REFS][64];    /* "module.name" */
    int fail_at;                /* return -1 on this call (1-based), 0 never */
} collected;

static int
collect(void *arg, const char *mod, size_t mlen, const char *name,
        size_t nlen)
{
    collected *c = arg;
    if (c->fail_at && c->n + 1 == c->fail_at) {
        return -1;
    }
    if (c->n < MAX_REFS) {
        snprintf(c->refs[c->n], sizeof(c->refs[0]), "%.*s.%.*s", (int)mlen,
                 mod, (int)nlen, name);
    }
    c->n++;
    return 0;
}

/* walks a heap copy of exactly n bytes, so valgrind sees any overread */
static int
walk(const char *data, size_t n, collected *c)
{
    unsigned char *copy = malloc(n ? n : 1);
    if (copy == NULL) {
        abort();
    }
    memcpy(copy, data, n);
    int r = chkpt_pickle_refs(copy, n, collect, c);
    free(copy);
    return r;
}

static void
test_protocol5_memo(void)
{
    collected c = {0};
    CHECK(walk(P5, sizeof(P5) - 1, &c) == 1);
    CHECK(c.n == 3);
    CHECK(strcmp(c.refs[0], "collections.OrderedDict") == 0);
    CHECK(strcmp(c.refs[1], "collections.Counter") == 0);
    CHECK(strcmp(c.refs[2], "posixpath.join") == 0);
}

static void
test_protocol2_global(void)
{
    collected c = {0};
    CHECK(walk(P2, sizeof(P2) - 1, &c) == 1);
    CHECK(c.n == 2);
    CHECK(strcmp(c.refs[0], "collections.OrderedDict") == 0);
    CHECK(strcmp(c.refs[1], "collections.Counter") == 0);
}

static void
test_protocol0_unfollowed(void)
{
    collected c = {0};
    CHECK(walk(P0, sizeof(P0) - 1, &c) == 0);
}

static void
test_empty(void)
{
    collected c = {0};
    CHECK(walk("", 0, &c) == 1);
    CHECK(c.n == 0);
    CHECK(walk(".", 1, &c) == 1);
    CHECK(c.n == 0);
}

/* Every prefix of a pickle: no read past it, and the refs found are a
 * prefix of the full list. A cut inside an argument is unfollowed. */
static void
test_truncated(void)
{
    const char *all[] = {P5, P2};
    size_t lens[] = {sizeof(P5) - 1, sizeof(P2) - 1};
    for (size_t k = 0; k < 2; k++) {
        collected full = {0};
        walk(all[k], lens[k], &full);
        for (size_t n = 0; n < lens[k]; n++) {
            collected c = {0};
            int r = walk(all[k], n, &c);
            CHECK(r == 0 || r == 1);
            CHECK(c.n <= full.n);
            for (int j = 0; j < c.n && j < MAX_REFS; j++) {
                CHECK(strcmp(c.refs[j], full.refs[j]) == 0);
            }
        }
    }
    /* cut inside SHORT_BINUNICODE 'collections' */
    collected c = {0};
    CHECK(walk(P5, 20, &c) == 0);
}

static void
test_stops_at_stop(void)
{
    /* STOP, then a GLOBAL that must not be seen */
    static const char s[] = ".cmod\nname\n";
    collected c = {0};
    CHECK(walk(s, sizeof(s) - 1, &c) == 1);
    CHECK(c.n == 0);
}

static void
test_callback_failure(void)
{
    collected c = {0};
    c.fail_at = 2;
    CHECK(walk(P5, sizeof(P5) - 1, &c) == -1);
    CHECK(c.n == 1);
}

/* Memo indices beyond the data are unfollowed (no allocation of 2^32
 * slots); BINGET of a slot never set is not a string. */
static void
test_memo_bounds(void)
{
    static const char bigput[] = "\x8c\x01m\x72\xff\xff\xff\xff.";
    collected c = {0};
    CHECK(walk(bigput, sizeof(bigput) - 1, &c) == 0);

    /* BINGET 5 (unset) then 'n' then STACK_GLOBAL: no ref */
    static const char unset[] = "\x68\x05\x8c\x01n\x93.";
    CHECK(walk(unset, sizeof(unset) - 1, &c) == 1);
    CHECK(c.n == 0);

    /* STACK_GLOBAL over non-strings (two ints): no ref */
    static const char ints[] = "K\x01K\x02\x93.";
    CHECK(walk(ints, sizeof(ints) - 1, &c) == 1);
    CHECK(c.n == 0);
}

/* 8-byte lengths larger than what is left are unfollowed, not overflowed */
static void
test_huge_length(void)
{
    static const char s[] = "\x8d\xff\xff\xff\xff\xff\xff\xff\xff" "ab";
    collected c = {0};
    CHECK(walk(s, sizeof(s) - 1, &c) == 0);
    static const char t[] = "\x8e\xf0\xff\xff\xff\xff\xff\xff\x7f" "ab";
    CHECK(walk(t, sizeof(t) - 1, &c) == 0);
    /* GLOBAL without its second newline */
    static const char g[] = "cmod\nname";
    CHECK(walk(g, sizeof(g) - 1, &c) == 0);
    CHECK(c.n == 0);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

int
main(void)
{
    static const test_case tests[] = {
        {"protocol5_memo", test_protocol5_memo},
        {"protocol2_global", test_protocol2_global},
        {"protocol0_unfollowed", test_protocol0_unfollowed},
        {"empty", test_empty},
        {"truncated", test_truncated},
        {"stops_at_stop", test_stops_at_stop},
        {"callback_failure", test_callback_failure},
        {"memo_bounds", test_memo_bounds},
        {"huge_length", test_huge_length},
    };
    int passed = 0, failed = 0;

    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        failures = 0;
        tests[i].fn();
        printf("%-24s %s\n", tests[i].name, failures ? "FAIL" : "ok");
        fflush(stdout);
        if (failures) {
            failed++;
        }
        else {
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
