/* fuzz_manifest.c: libFuzzer target for the store's reader.
 *
 * The first input byte picks what the rest is:
 *   0 (mod 4): a manifest file, put in the live store of reference
 *              (byte / 4) % 3 (so valid chunk references resolve);
 *   1..3:      the chunk file of reference 0..2 (see fuzz_refs.h), read
 *              through that reference's valid manifest.
 * Either way the whole reader runs on it: open, meta, read_stream,
 * map_stream, verify; a manifest also goes through verify_all (which lists
 * the store) and gc, run on the reference's own store beside its valid
 * manifest. It must never crash, read out of bounds, or leak.
 *
 * Built with CHKPT_FUZZING, the store ignores the manifest, trailer and
 * compressed-data checksums (chkpt_fuzz_check_sums = 0) so that mutated
 * inputs reach the parsers and bounds checks behind them. Beyond crashes it
 * checks that what is read back is refused or identical to what was
 * written:
 *   - a mutated chunk is read through a valid manifest: a stream that reads
 *     (or maps) must equal the reference's (the content hash that names a
 *     chunk is checked even in this build);
 *   - a manifest is read a second time with the checksums on: if it opens,
 *     its meta and streams must be the reference's;
 *   - after gc, the reference's manifest and chunk must both be there.
 */
#include "fuzz_refs.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX];
static fuzz_ref refs[NREFS];
static unsigned char *saved[NREFS];       /* the valid chunk files */
static size_t saved_len[NREFS];
static unsigned char *expected[NREFS];    /* stream 1 of each reference */

/* A failed check: say which, then abort so libFuzzer keeps the input. */
#define CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "fuzz_manifest.c:%d: check failed: %s\n", \
                    __LINE__, #cond); \
            abort(); \
        } \
    } while (0)

static void
put_file(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (n > 0 && write(fd, data, n) != (ssize_t)n)) {
        abort();
    }
    close(fd);
}

static unsigned char *
get_file(const char *path, size_t *n)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    unsigned char *p;

    if (fd < 0 || fstat(fd, &st) < 0) {
        abort();
    }
    *n = (size_t)st.st_size;
    p = malloc(*n);
    if (p == NULL || read(fd, p, *n) != (ssize_t)*n) {
        abort();
    }
    close(fd);
    return p;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    strcpy(base, "work-XXXXXX");     /* removed by `make run` */
    if (mkdtemp(base) == NULL || fuzz_make_refs(base, refs) < 0) {
        abort();
    }
    for (int k = 0; k < NREFS; k++) {
        saved[k] = get_file(refs[k].chunk, &saved_len[k]);
        expected[k] = malloc(fuzz_ref_len(k));
        if (expected[k] == NULL) {
            abort();
        }
        fuzz_ref_fill(k, expected[k]);
    }
    return 0;
}

/* Does stream i of reference k hold exactly these bytes? */
static int
same_as_written(int k, size_t i, const void *p, uint64_t len)
{
    if (i == 0) {
        return len == strlen(FUZZ_INLINE) && memcmp(p, FUZZ_INLINE, len) == 0;
    }
    return i == 1 && len == fuzz_ref_len(k)
           && memcmp(p, expected[k], len) == 0;
}

/* Runs the reader on the manifest at path. With k >= 0 whatever reads must
 * be reference k's; returns how many streams read back (-1: not opened). */
static int
exercise(const char *path, int k)
{
    char err[CHKPT_ERRLEN];
    chkpt_snapreader *r = chkpt_snap_open(path, err, sizeof(err));
    size_t n, meta_len;
    int good = 0;

    if (r == NULL) {
        return -1;
    }
    const char *meta = chkpt_snap_meta(r, &meta_len);
    if (k >= 0) {
        CHECK(meta_len == strlen(FUZZ_META)
              && memcmp(meta, FUZZ_META, meta_len) == 0);
    }
    n = chkpt_snap_nstreams(r);
    for (size_t i = 0; i < n && i < 16; i++) {
        uint64_t len = chkpt_snap_stream_len(r, i);
        void *addr;
        size_t maplen;
        if (len <= 8 * CHKPT_CHUNK_SIZE) {
            void *buf = malloc(len ? len : 1);
            if (buf != NULL) {
                if (chkpt_snap_read_stream(r, i, buf, err, sizeof(err)) == 0) {
                    CHECK(k < 0 || same_as_written(k, i, buf, len));
                    good++;
                }
                free(buf);
            }
        }
        if (chkpt_snap_map_stream(r, i, &addr, &maplen, err, sizeof(err))
            == 0) {
            CHECK(k < 0 || same_as_written(k, i, addr, len));
            if (len > 0) {
                /* Writable and fully backed. */
                ((volatile unsigned char *)addr)[0] ^= 1;
                ((volatile unsigned char *)addr)[len - 1] ^= 1;
            }
            chkpt_unmap(addr, maplen);
        }
    }
    (void)chkpt_snap_read_stream(r, n, NULL, err, sizeof(err));
    (void)chkpt_snap_verify(r, err, sizeof(err));
    chkpt_snap_close(r);
    return good;
}

/* A fuzzed manifest in the live store of reference k. */
static void
fuzz_manifest(int k, const uint8_t *data, size_t size)
{
    char dir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN];
    size_t rs, rc;

    snprintf(dir, sizeof(dir), "%s/ref%d", base, k);
    snprintf(path, sizeof(path), "%s/snapshots/zz-fuzz.ckpt", dir);
    put_file(path, data, size);
    (void)exercise(path, -1);
    chkpt_fuzz_check_sums = 1;
    (void)exercise(path, k);
    chkpt_fuzz_check_sums = 0;
    (void)chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err));
    /* Keeps every manifest: whatever the fuzzed one says, the reference's
       own stays valid, so its chunk must survive. */
    (void)chkpt_store_gc(dir, 1000, &rs, &rc, err, sizeof(err));
    unlink(path);
    /* gc only removes files: the reference is intact if its two are there */
    CHECK(access(refs[k].manifest, F_OK) == 0
          && access(refs[k].chunk, F_OK) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int mode;

    if (size < 1) {
        return 0;
    }
    mode = data[0] % 4;
    if (mode == 0) {
        fuzz_manifest((data[0] / 4) % NREFS, data + 1, size - 1);
    }
    else {
        int k = mode - 1;
        put_file(refs[k].chunk, data + 1, size - 1);
        (void)exercise(refs[k].manifest, k);
        put_file(refs[k].chunk, saved[k], saved_len[k]);
    }
    return 0;
}
