/* fuzz_manifest.c: libFuzzer target for the store's reader.
 *
 * The first input byte picks what the rest is:
 *   0 (mod 4): a manifest file, put in the store of reference
 *              (byte / 4) % 3 (so valid chunk references resolve);
 *   1..3:      the chunk file of reference 0..2 (see fuzz_refs.h), read
 *              through that reference's valid manifest.
 * Either way the whole reader runs on it: open, meta, read_stream,
 * map_stream, verify, plus verify_all, list and gc on a copy. It must
 * never crash, read out of bounds, or leak. Built with CHKPT_FUZZING, which
 * makes the store ignore checksum mismatches so that mutated inputs reach
 * the parsers and bounds checks behind them.
 */
#include "fuzz_refs.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX];
static fuzz_ref refs[NREFS];
static unsigned char *saved[NREFS];
static size_t saved_len[NREFS];

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
    }
    return 0;
}

static void
exercise(const char *path)
{
    char err[CHKPT_ERRLEN];
    chkpt_snapreader *r = chkpt_snap_open(path, err, sizeof(err));
    size_t n, meta_len;

    if (r == NULL) {
        return;
    }
    (void)chkpt_snap_meta(r, &meta_len);
    n = chkpt_snap_nstreams(r);
    for (size_t i = 0; i < n && i < 16; i++) {
        uint64_t len = chkpt_snap_stream_len(r, i);
        void *addr;
        size_t maplen;
        if (len <= 8 * CHKPT_CHUNK_SIZE) {
            void *buf = malloc(len ? len : 1);
            if (buf != NULL) {
                (void)chkpt_snap_read_stream(r, i, buf, err, sizeof(err));
                free(buf);
            }
        }
        if (chkpt_snap_map_stream(r, i, &addr, &maplen, err, sizeof(err))
            == 0) {
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
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX], err[CHKPT_ERRLEN];
    int mode;

    if (size < 1) {
        return 0;
    }
    mode = data[0] % 4;
    if (mode == 0) {
        /* Into the store of reference (data[0] / 4) % NREFS, whose chunk
           a valid manifest can then reference. */
        char dir[PATH_MAX];
        size_t rs, rc;
        snprintf(dir, sizeof(dir), "%s/ref%d", base, (data[0] / 4) % NREFS);
        snprintf(path, sizeof(path), "%s/snapshots/zz-fuzz.ckpt", dir);
        put_file(path, data + 1, size - 1);
        exercise(path);
        (void)chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err));
        /* Keeps every manifest; the reference's own stays valid, so its
           chunk is never collected. */
        (void)chkpt_store_gc(dir, 1000, &rs, &rc, err, sizeof(err));
        unlink(path);
    }
    else {
        int k = mode - 1;
        put_file(refs[k].chunk, data + 1, size - 1);
        exercise(refs[k].manifest);
        put_file(refs[k].chunk, saved[k], saved_len[k]);
    }
    return 0;
}
