/* test_store.c: unit tests of the on-disk store (src/store.c).
 *
 * Run with `make -C tests/c run` (under valgrind). Each test makes its own
 * store in a fresh temporary directory. The last line is "N passed, M failed".
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

static int failures;        /* checks failed in the current test */

#define CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond); \
            failures++; \
        } \
    } while (0)

#define CHECK_MSG(cond, msg) do { \
        if (!(cond)) { \
            fprintf(stderr, "  %s:%d: check failed: %s (%s)\n", __FILE__, \
                    __LINE__, #cond, (msg)); \
            failures++; \
        } \
    } while (0)

/* ---- helpers --------------------------------------------------------- */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void
rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *
new_dir(char *buf)
{
    strcpy(buf, "/tmp/chkpt-test-XXXXXX");
    if (mkdtemp(buf) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    strcat(buf, "/store");
    return buf;
}

static void
drop_dir(char *buf)
{
    char *slash = strrchr(buf, '/');
    *slash = '\0';
    rm_rf(buf);
}

/* Deterministic pseudo-random bytes (incompressible). */
static unsigned char *
random_bytes(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n ? n : 1);
    uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
    return p;
}

static chkpt_store *
open_store(const char *dir)
{
    char err[CHKPT_ERRLEN];
    chkpt_store *s = NULL;
    if (chkpt_store_open(dir, 1, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "  store_open: %s\n", err);
        exit(2);
    }
    return s;
}

/* One snapshot of the given streams; returns 0 and the manifest path. */
static int
snap(chkpt_store *s, int level, const void **data, const size_t *lens,
     const int *flags, size_t n, char *path, uint64_t *written)
{
    char err[CHKPT_ERRLEN];
    chkpt_snapwriter *w = chkpt_snap_begin(s, level, err, sizeof(err));
    const char *meta = "{\"kind\": \"test\"}";

    if (w == NULL) {
        fprintf(stderr, "  begin: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (chkpt_snap_add_stream(w, data[i], lens[i], flags ? flags[i] : 0,
                                  err, sizeof(err)) != (long)i) {
            fprintf(stderr, "  add_stream: %s\n", err);
            chkpt_snap_abort(w);
            return -1;
        }
    }
    if (written) {
        *written = chkpt_snap_bytes_written(w);
    }
    if (chkpt_snap_commit(w, meta, strlen(meta), path, PATH_MAX, err,
                          sizeof(err)) < 0) {
        fprintf(stderr, "  commit: %s\n", err);
        return -1;
    }
    return 0;
}

/* Reads and maps every stream and compares with the originals. */
static int
same_streams(const char *path, const void **data, const size_t *lens,
             size_t n)
{
    char err[CHKPT_ERRLEN];
    chkpt_snapreader *r = chkpt_snap_open(path, err, sizeof(err));
    int ok = 1;

    if (r == NULL) {
        fprintf(stderr, "  open: %s\n", err);
        return 0;
    }
    if (chkpt_snap_nstreams(r) != n) {
        chkpt_snap_close(r);
        return 0;
    }
    for (size_t i = 0; i < n && ok; i++) {
        void *buf, *addr;
        size_t maplen;
        if (chkpt_snap_stream_len(r, i) != lens[i]) {
            ok = 0;
            break;
        }
        buf = malloc(lens[i] ? lens[i] : 1);
        if (chkpt_snap_read_stream(r, i, buf, err, sizeof(err)) < 0) {
            fprintf(stderr, "  read_stream %zu: %s\n", i, err);
            ok = 0;
        }
        else if (lens[i] && memcmp(buf, data[i], lens[i]) != 0) {
            ok = 0;
        }
        free(buf);
        if (chkpt_snap_map_stream(r, i, &addr, &maplen, err, sizeof(err))
            < 0) {
            fprintf(stderr, "  map_stream %zu: %s\n", i, err);
            ok = 0;
            continue;
        }
        if (lens[i] == 0) {
            ok &= (addr == NULL);
        }
        else {
            ok &= (memcmp(addr, data[i], lens[i]) == 0);
            /* Writable, copy-on-write. */
            memset(addr, 0xAB, lens[i]);
            ok &= (((unsigned char *)addr)[lens[i] - 1] == 0xAB);
        }
        chkpt_unmap(addr, maplen);
        /* ... and never written back to the chunk files. */
        buf = malloc(lens[i] ? lens[i] : 1);
        if (chkpt_snap_read_stream(r, i, buf, err, sizeof(err)) < 0
            || (lens[i] && memcmp(buf, data[i], lens[i]) != 0)) {
            fprintf(stderr, "  stream %zu changed after writing to its map\n",
                    i);
            ok = 0;
        }
        free(buf);
    }
    if (ok && chkpt_snap_verify(r, err, sizeof(err)) < 0) {
        fprintf(stderr, "  verify: %s\n", err);
        ok = 0;
    }
    chkpt_snap_close(r);
    return ok;
}

static size_t
count_files(const char *dir, const char *sub)
{
    char path[PATH_MAX];
    size_t n = 0;
    DIR *d;
    struct dirent *de;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        char p[PATH_MAX];
        struct stat st;
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            char s2[PATH_MAX];
            snprintf(s2, sizeof(s2), "%s/%s", sub, de->d_name);
            n += count_files(dir, s2);
        }
        else {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Path of the first chunk file found (in directory order). */
static int
some_chunk(const char *dir, char *out)
{
    char cdir[PATH_MAX];
    DIR *d;
    struct dirent *de;
    int found = 0;

    snprintf(cdir, sizeof(cdir), "%s/chunks", dir);
    d = opendir(cdir);
    while (d && !found && (de = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        DIR *sd;
        struct dirent *fe;
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(sub, sizeof(sub), "%s/%s", cdir, de->d_name);
        sd = opendir(sub);
        while (sd && (fe = readdir(sd)) != NULL) {
            if (fe->d_name[0] != '.') {
                snprintf(out, PATH_MAX, "%s/%s", sub, fe->d_name);
                found = 1;
                break;
            }
        }
        if (sd) {
            closedir(sd);
        }
    }
    if (d) {
        closedir(d);
    }
    return found ? 0 : -1;
}

static void
flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    struct stat st;

    fstat(fd, &st);
    if (off < 0) {
        off += st.st_size;
    }
    if (pread(fd, &c, 1, off) != 1) {
        perror("pread");
    }
    c ^= 0x5A;
    if (pwrite(fd, &c, 1, off) != 1) {
        perror("pwrite");
    }
    close(fd);
}

static unsigned char *
read_file(const char *path, size_t *n)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    unsigned char *p;

    fstat(fd, &st);
    *n = (size_t)st.st_size;
    p = malloc(*n ? *n : 1);
    if (read(fd, p, *n) != (ssize_t)*n) {
        perror("read");
    }
    close(fd);
    return p;
}

static void
write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (write(fd, p, n) != (ssize_t)n) {
        perror("write");
    }
    close(fd);
}

/* ---- tests ----------------------------------------------------------- */

static void
test_round_trip(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {0, 100, CHKPT_CHUNK_SIZE, CHKPT_CHUNK_SIZE * 5 / 2, 100,
                     4095, 4096};
    int flags[] = {0, 0, 0, 0, CHKPT_STREAM_SHARED, 0, 0};
    const void *data[7];
    chkpt_store *s;
    chkpt_snapreader *r;
    const char *meta;
    size_t meta_len;

    new_dir(dir);
    s = open_store(dir);
    for (int i = 0; i < 7; i++) {
        data[i] = random_bytes(lens[i], (unsigned)i);
    }
    CHECK(snap(s, 0, data, lens, flags, 7, path, NULL) == 0);
    CHECK(same_streams(path, data, lens, 7));
    r = chkpt_snap_open(path, err, sizeof(err));
    CHECK(r != NULL);
    if (r) {
        meta = chkpt_snap_meta(r, &meta_len);
        CHECK(meta_len == strlen("{\"kind\": \"test\"}"));
        CHECK(memcmp(meta, "{\"kind\": \"test\"}", meta_len) == 0);
        CHECK(chkpt_snap_read_stream(r, 7, NULL, err, sizeof(err)) < 0);
        chkpt_snap_close(r);
    }
    /* Chunks: 1 (1 MiB) + 3 (2.5 MiB) + 1 (shared tiny) + 1 (4096). */
    CHECK(count_files(dir, "chunks") == 6);
    CHECK(count_files(dir, "tmp") == 0);
    for (int i = 0; i < 7; i++) {
        free((void *)data[i]);
    }
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
test_dedup(void)
{
    char dir[PATH_MAX], path[PATH_MAX];
    size_t lens[] = {CHKPT_CHUNK_SIZE * 5 / 2, 50};
    const void *data[2];
    uint64_t w1 = 0, w2 = 1;
    chkpt_store *s;

    new_dir(dir);
    s = open_store(dir);
    data[0] = random_bytes(lens[0], 1);
    data[1] = random_bytes(lens[1], 2);
    CHECK(snap(s, 0, data, lens, NULL, 2, path, &w1) == 0);
    CHECK(w1 >= lens[0]);
    CHECK(snap(s, 0, data, lens, NULL, 2, path, &w2) == 0);
    CHECK(w2 == 0);
    CHECK(count_files(dir, "chunks") == 3);
    CHECK(count_files(dir, "snapshots") == 2);
    CHECK(same_streams(path, data, lens, 2));
    /* A change inside one chunk writes that chunk only. */
    ((unsigned char *)data[0])[CHKPT_CHUNK_SIZE + 5] ^= 1;
    CHECK(snap(s, 0, data, lens, NULL, 2, path, &w2) == 0);
    CHECK(w2 > 0 && w2 <= CHKPT_CHUNK_SIZE + 64);
    CHECK(count_files(dir, "chunks") == 4);
    /* Repeated content inside one snapshot is written once. */
    {
        size_t zlen[] = {3 * CHKPT_CHUNK_SIZE};
        const void *zdata[1];
        zdata[0] = calloc(1, zlen[0]);
        CHECK(snap(s, 0, zdata, zlen, NULL, 1, path, &w2) == 0);
        CHECK(w2 == CHKPT_CHUNK_SIZE + 40);
        CHECK(count_files(dir, "chunks") == 5);
        CHECK(same_streams(path, zdata, zlen, 1));
        free((void *)zdata[0]);
    }
    free((void *)data[0]);
    free((void *)data[1]);
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
test_zstd(void)
{
    char dir[PATH_MAX], path[PATH_MAX];
    size_t lens[] = {3 * CHKPT_CHUNK_SIZE + 12345, CHKPT_CHUNK_SIZE};
    const void *data[2];
    unsigned char *p = malloc(lens[0]);
    uint64_t w = 0;
    chkpt_store *s;

    for (size_t i = 0; i < lens[0]; i++) {
        p[i] = (unsigned char)((i / 7) % 13);
    }
    data[0] = p;
    data[1] = random_bytes(lens[1], 9);     /* incompressible: stays raw */
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 3, data, lens, NULL, 1, path, &w) == 0);
    CHECK(w > 0 && w < lens[0] / 20);
    CHECK(same_streams(path, data, lens, 1));
    CHECK(snap(s, 3, data + 1, lens + 1, NULL, 1, path, &w) == 0);
    CHECK(w == lens[1] + 40);
    CHECK(same_streams(path, data + 1, lens + 1, 1));
    free(p);
    free((void *)data[1]);
    chkpt_store_close(s);
    drop_dir(dir);
}

/* Damage in chunks: flipped data byte, trailer byte, truncation,
 * compressed data, missing file. */
static void
test_damaged_chunk(void)
{
    char dir[PATH_MAX], path[PATH_MAX], chunk[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {CHKPT_CHUNK_SIZE / 2};
    const void *data[1];
    chkpt_store *s;
    chkpt_snapreader *r;
    void *buf = malloc(lens[0]), *addr;
    size_t maplen;
    unsigned char *saved;
    size_t saved_n;
    long offsets[] = {10, -1, -20, -40};

    for (int level = 0; level <= 3; level += 3) {
        unsigned char *p = malloc(lens[0]);
        for (size_t i = 0; i < lens[0]; i++) {
            p[i] = (unsigned char)(level ? i % 3 : (i * 2654435761u) >> 13);
        }
        data[0] = p;
        new_dir(dir);
        s = open_store(dir);
        CHECK(snap(s, level, data, lens, NULL, 1, path, NULL) == 0);
        CHECK(some_chunk(dir, chunk) == 0);
        saved = read_file(chunk, &saved_n);
        for (size_t k = 0; k < sizeof(offsets) / sizeof(offsets[0]); k++) {
            flip_byte(chunk, offsets[k]);
            r = chkpt_snap_open(path, err, sizeof(err));
            CHECK(r != NULL);
            if (r) {
                err[0] = '\0';
                CHECK(chkpt_snap_read_stream(r, 0, buf, err, sizeof(err)) < 0);
                CHECK_MSG(strstr(err, "of stream 0 is damaged") != NULL, err);
                err[0] = '\0';
                CHECK(chkpt_snap_map_stream(r, 0, &addr, &maplen, err,
                                            sizeof(err)) < 0);
                CHECK_MSG(strstr(err, "is damaged") != NULL, err);
                CHECK(chkpt_snap_verify(r, err, sizeof(err)) < 0);
                chkpt_snap_close(r);
            }
            CHECK(chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err))
                  < 0);
            write_file(chunk, saved, saved_n);
        }
        /* Truncated chunk. */
        write_file(chunk, saved, saved_n - 1);
        r = chkpt_snap_open(path, err, sizeof(err));
        CHECK(r != NULL && chkpt_snap_verify(r, err, sizeof(err)) < 0);
        CHECK_MSG(strstr(err, "is damaged") != NULL, err);
        chkpt_snap_close(r);
        /* Missing chunk. */
        unlink(chunk);
        r = chkpt_snap_open(path, err, sizeof(err));
        CHECK(r != NULL && chkpt_snap_read_stream(r, 0, buf, err, sizeof(err))
              < 0);
        CHECK_MSG(strstr(err, "is missing") != NULL, err);
        chkpt_snap_close(r);
        /* A damaged copy is replaced by the next snapshot of that data. */
        write_file(chunk, saved, saved_n / 2);
        CHECK(snap(s, level, data, lens, NULL, 1, path, NULL) == 0);
        CHECK(same_streams(path, data, lens, 1));
        free(saved);
        free(p);
        chkpt_store_close(s);
        drop_dir(dir);
    }
    free(buf);
}

static void
test_damaged_manifest(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {10, CHKPT_CHUNK_SIZE + 1};
    const void *data[2];
    unsigned char *orig;
    size_t n;
    chkpt_store *s;
    chkpt_snapreader *r;
    int opened = 0;

    data[0] = random_bytes(lens[0], 3);
    data[1] = random_bytes(lens[1], 4);
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 0, data, lens, NULL, 2, path, NULL) == 0);
    orig = read_file(path, &n);
    /* Every single flipped byte is detected. */
    for (size_t i = 0; i < n; i++) {
        orig[i] ^= 0x01;
        write_file(path, orig, n);
        r = chkpt_snap_open(path, err, sizeof(err));
        if (r != NULL) {
            opened++;
            chkpt_snap_close(r);
        }
        orig[i] ^= 0x01;
    }
    CHECK(opened == 0);
    /* Every truncation is detected. */
    opened = 0;
    for (size_t i = 0; i < n; i++) {
        write_file(path, orig, i);
        r = chkpt_snap_open(path, err, sizeof(err));
        if (r != NULL) {
            opened++;
            chkpt_snap_close(r);
        }
    }
    CHECK(opened == 0);
    write_file(path, orig, n - 1);
    r = chkpt_snap_open(path, err, sizeof(err));
    CHECK(r == NULL);
    CHECK_MSG(strstr(err, "is damaged") != NULL, err);
    /* Listing does not fail because of it. */
    {
        char **paths;
        size_t np;
        CHECK(chkpt_store_list(dir, &paths, &np, err, sizeof(err)) == 0);
        CHECK(np == 1);
        chkpt_free_list(paths, np);
    }
    write_file(path, orig, n);
    CHECK(same_streams(path, data, lens, 2));
    free(orig);
    free((void *)data[0]);
    free((void *)data[1]);
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
test_newer_format(void)
{
    char dir[PATH_MAX], path[PATH_MAX], fpath[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {10};
    const void *data[1] = {"0123456789"};
    chkpt_store *s;
    char **paths;
    size_t n;

    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 0, data, lens, NULL, 1, path, NULL) == 0);
    chkpt_store_close(s);
    snprintf(fpath, sizeof(fpath), "%s/FORMAT", dir);
    write_file(fpath, "chkpt-store 2\n", 14);
    s = NULL;
    CHECK(chkpt_store_open(dir, 1, &s, err, sizeof(err)) < 0);
    CHECK_MSG(strcmp(err, "store format 2 is newer than this chkpt supports "
                     "(1): upgrade chkpt") == 0, err);
    CHECK(chkpt_store_list(dir, &paths, &n, err, sizeof(err)) < 0);
    CHECK(chkpt_snap_open(path, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(chkpt_store_gc(dir, 0, NULL, NULL, err, sizeof(err)) < 0);
    CHECK(count_files(dir, "snapshots") == 1);
    write_file(fpath, "garbage\n", 8);
    CHECK(chkpt_store_open(dir, 0, &s, err, sizeof(err)) < 0);
    CHECK_MSG(strstr(err, "not a chkpt store") != NULL, err);
    drop_dir(dir);
    /* Not a store at all, without create. */
    new_dir(dir);
    CHECK(chkpt_store_open(dir, 0, &s, err, sizeof(err)) < 0);
    drop_dir(dir);
}

static void
test_list_order(void)
{
    char dir[PATH_MAX], paths_made[5][PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {10};
    const void *data[1] = {"0123456789"};
    chkpt_store *s;
    char **paths;
    size_t n;

    new_dir(dir);
    s = open_store(dir);
    CHECK(chkpt_store_list(dir, &paths, &n, err, sizeof(err)) == 0 && n == 0);
    chkpt_free_list(paths, n);
    for (int i = 0; i < 5; i++) {
        CHECK(snap(s, 0, data, lens, NULL, 1, paths_made[i], NULL) == 0);
    }
    CHECK(chkpt_store_list(dir, &paths, &n, err, sizeof(err)) == 0);
    CHECK(n == 5);
    for (size_t i = 0; i < n && i < 5; i++) {
        CHECK(strcmp(paths[i], paths_made[i]) == 0);
    }
    chkpt_free_list(paths, n);
    CHECK(strlen(chkpt_store_dir(s)) > 0);
    chkpt_store_close(s);
    drop_dir(dir);
}

static int
exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void
chunk_path(const char *dir, const void *data, size_t n, char *out);

static void
test_gc(void)
{
    char dir[PATH_MAX], path[4][PATH_MAX], err[CHKPT_ERRLEN], tmpf[PATH_MAX];
    char shared_chunk[PATH_MAX], own_chunk[4][PATH_MAX];
    size_t lens[] = {CHKPT_CHUNK_SIZE, 2000};
    const void *data[2];
    unsigned char *shared = random_bytes(lens[0], 77);
    size_t rs = 9, rc = 9;
    chkpt_store *s;

    new_dir(dir);
    s = open_store(dir);
    chunk_path(dir, shared, lens[0], shared_chunk);
    for (int i = 0; i < 4; i++) {
        unsigned char *own = random_bytes(lens[1], 100 + (unsigned)i);
        int flags[] = {0, CHKPT_STREAM_SHARED};
        data[0] = shared;
        data[1] = own;
        chunk_path(dir, own, lens[1], own_chunk[i]);
        CHECK(snap(s, 0, data, lens, flags, 2, path[i], NULL) == 0);
        free(own);
    }
    snprintf(tmpf, sizeof(tmpf), "%s/tmp/stale", dir);
    write_file(tmpf, "x", 1);
    CHECK(count_files(dir, "chunks") == 5);
    CHECK(chkpt_store_gc(dir, 2, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 2 && rc == 2);
    CHECK(!exists(path[0]) && !exists(path[1]));
    CHECK(exists(path[2]) && exists(path[3]));
    CHECK(!exists(own_chunk[0]) && !exists(own_chunk[1]));
    CHECK(exists(own_chunk[2]) && exists(own_chunk[3]));
    CHECK(exists(shared_chunk));
    CHECK(!exists(tmpf));
    CHECK(chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err)) == 0);
    /* keep more than there are: nothing removed. */
    CHECK(chkpt_store_gc(dir, 10, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 0 && rc == 0);
    /* A damaged kept manifest protects nothing, but stays. */
    flip_byte(path[2], 40);
    CHECK(chkpt_store_gc(dir, 2, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 0 && rc == 1 && !exists(own_chunk[2]) && exists(path[2]));
    CHECK(exists(shared_chunk) && exists(own_chunk[3]));
    /* Budget: a tiny budget leaves only the newest (keep_min 1). */
    CHECK(chkpt_store_gc_budget(dir, 1, 1, NULL, 0, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 1 && rc == 0);
    CHECK(!exists(path[2]) && exists(path[3]));
    CHECK(chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err)) == 0);
    /* A big budget removes nothing; keep 0 removes everything. */
    CHECK(chkpt_store_gc_budget(dir, 1u << 30, 0, NULL, 0, &rs, &rc, err, sizeof(err))
          == 0 && rs == 0 && rc == 0);
    CHECK(chkpt_store_gc(dir, 0, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 1 && rc == 2 && count_files(dir, "chunks") == 0);
    CHECK(chkpt_store_gc(dir, -1, &rs, &rc, err, sizeof(err)) < 0);
    free(shared);
    chkpt_store_close(s);
    drop_dir(dir);
}

/* A reader takes no lock: gc removing the snapshot it is reading makes
 * the read fail with a message that says so, not "damaged". */
static void
test_gc_under_reader(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[] = {100000};      /* chunked: inline streams are in the manifest */
    const void *data[1];
    unsigned char *bytes = random_bytes(lens[0], 5);
    static unsigned char back[100000];
    size_t rs, rc;
    chkpt_store *s;
    chkpt_snapreader *r;

    new_dir(dir);
    s = open_store(dir);
    data[0] = bytes;
    CHECK(snap(s, 0, data, lens, NULL, 1, path, NULL) == 0);
    r = chkpt_snap_open(path, err, sizeof(err));
    CHECK_MSG(r != NULL, err);
    CHECK(chkpt_store_gc(dir, 0, &rs, &rc, err, sizeof(err)) == 0);
    CHECK(rs == 1 && rc == 1);
    if (r != NULL) {
        CHECK(chkpt_snap_stream_len(r, 0) == sizeof(back));
        CHECK(chkpt_snap_read_stream(r, 0, back, err, sizeof(err)) < 0);
        CHECK_MSG(strstr(err, "was removed (gc) while it was being read")
                  != NULL, err);
        chkpt_snap_close(r);
    }
    free(bytes);
    chkpt_store_close(s);
    drop_dir(dir);
}

/* Budget arithmetic with dedup: each snapshot adds one 1 MiB chunk and
 * shares one; removing the oldest frees 1 MiB (+ its manifest). With
 * pin_first, the oldest snapshot is pinned (a crash snapshot): it stays,
 * and the three after it go instead. */
static void
gc_budget(int pin_first)
{
    char dir[PATH_MAX], path[PATH_MAX], first[PATH_MAX], err[CHKPT_ERRLEN];
    char *pinned[1] = {first};
    size_t lens[] = {CHKPT_CHUNK_SIZE, CHKPT_CHUNK_SIZE};
    const void *data[2];
    unsigned char *shared = random_bytes(lens[0], 5);
    size_t rs, rc;
    chkpt_store *s;

    new_dir(dir);
    s = open_store(dir);
    for (int i = 0; i < 6; i++) {
        unsigned char *own = random_bytes(lens[1], 200 + (unsigned)i);
        data[0] = shared;
        data[1] = own;
        CHECK(snap(s, 0, data, lens, NULL, 2, path, NULL) == 0);
        if (i == 0) {
            memcpy(first, path, sizeof(first));
        }
        free(own);
    }
    /* 7 MiB of chunks; a budget of 4.5 MiB keeps shared + 3 own. */
    CHECK(chkpt_store_gc_budget(dir, CHKPT_CHUNK_SIZE * 9 / 2, 1, pinned,
                                pin_first ? 1 : 0, &rs, &rc, err,
                                sizeof(err)) == 0);
    CHECK(rs == 3 && rc == 3);
    CHECK(count_files(dir, "snapshots") == 3);
    CHECK(count_files(dir, "chunks") == 4);
    CHECK(exists(first) == pin_first);
    CHECK(chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err)) == 0);
    free(shared);
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
test_gc_budget(void)
{
    gc_budget(0);
}

static void
test_gc_budget_pinned(void)
{
    gc_budget(1);
}

static void
chunk_path(const char *dir, const void *data, size_t n, char *out)
{
    /* Same naming as the store: XXH3-128, canonical (big-endian) hex. */
    char tdir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN];
    size_t lens[1] = {n};
    const void *d[1] = {data};
    int flags[1] = {CHKPT_STREAM_SHARED};
    chkpt_store *s;
    char **paths;
    size_t np;

    /* Find it by writing the data alone into a scratch store. */
    new_dir(tdir);
    s = open_store(tdir);
    snap(s, 0, d, lens, flags, 1, path, NULL);
    chkpt_store_close(s);
    out[0] = '\0';
    if (some_chunk(tdir, path) == 0) {
        const char *rel = strstr(path, "/chunks/");
        snprintf(out, PATH_MAX, "%s%s", dir, rel);
    }
    (void)paths; (void)np; (void)err;
    drop_dir(tdir);
}

static void
test_permissions(void)
{
    char dir[PATH_MAX], path[PATH_MAX], chunk[PATH_MAX], p[PATH_MAX];
    char err[CHKPT_ERRLEN];
    size_t lens[] = {CHKPT_CHUNK_SIZE};
    const void *data[1];
    const char *dirs[] = {"", "/snapshots", "/chunks", "/tmp"};
    struct stat st;
    mode_t old = umask(0);
    chkpt_store *s;

    data[0] = random_bytes(lens[0], 8);
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 0, data, lens, NULL, 1, path, NULL) == 0);
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", dir, dirs[i]);
        CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0700);
    }
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(some_chunk(dir, chunk) == 0);
    CHECK(stat(chunk, &st) == 0 && (st.st_mode & 0777) == 0600);
    *strrchr(chunk, '/') = '\0';
    CHECK(stat(chunk, &st) == 0 && (st.st_mode & 0777) == 0700);
    snprintf(p, sizeof(p), "%s/FORMAT", dir);
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
    snprintf(p, sizeof(p), "%s/lock", dir);
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
    umask(old);

    /* Owner check. */
    CHECK(chkpt_store_check_owner(dir, err, sizeof(err)) == 0);
    chmod(dir, 0770);
    CHECK(chkpt_store_check_owner(dir, err, sizeof(err)) < 0);
    CHECK_MSG(strstr(err, "writable by group") != NULL, err);
    chmod(dir, 0700);
    snprintf(p, sizeof(p), "%s/chunks", dir);
    chmod(p, 0703);
    CHECK(chkpt_store_check_owner(dir, err, sizeof(err)) < 0);
    CHECK_MSG(strstr(err, "writable by others") != NULL, err);
    chmod(p, 0700);
    if (geteuid() == 0) {
        /* As root we can hand the store to someone else. */
        CHECK(chown(dir, 12345, 12345) == 0);
        CHECK(chkpt_store_check_owner(dir, err, sizeof(err)) < 0);
        CHECK_MSG(strstr(err, "owned by uid 12345") != NULL, err);
        CHECK(chown(dir, 0, 0) == 0);
    }
    CHECK(chkpt_store_check_owner(dir, err, sizeof(err)) == 0);
    free((void *)data[0]);
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
test_relocatable(void)
{
    char dir[PATH_MAX], path[PATH_MAX], moved[PATH_MAX], mpath[PATH_MAX];
    char cwd[PATH_MAX];
    size_t lens[] = {CHKPT_CHUNK_SIZE + 10};
    const void *data[1];
    chkpt_store *s;

    data[0] = random_bytes(lens[0], 11);
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 0, data, lens, NULL, 1, path, NULL) == 0);
    chkpt_store_close(s);
    snprintf(moved, sizeof(moved), "%s2", dir);
    CHECK(rename(dir, moved) == 0);
    snprintf(mpath, sizeof(mpath), "%s/snapshots/%s", moved,
             strrchr(path, '/') + 1);
    CHECK(same_streams(mpath, data, lens, 1));
    /* Relative path, from inside snapshots/. */
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    snprintf(mpath, sizeof(mpath), "%s/snapshots", moved);
    CHECK(chdir(mpath) == 0);
    CHECK(same_streams(strrchr(path, '/') + 1, data, lens, 1));
    CHECK(chdir(cwd) == 0);
    CHECK(rename(moved, dir) == 0);
    free((void *)data[0]);
    drop_dir(dir);
}

/* A write error leaves nothing visible and no temporary file. */
static void
test_write_error(void)
{
    char dir[PATH_MAX], p[PATH_MAX], err[CHKPT_ERRLEN], path[PATH_MAX];
    size_t lens[] = {CHKPT_CHUNK_SIZE * 2};
    const void *data[1];
    chkpt_store *s;
    chkpt_snapwriter *w;

    data[0] = random_bytes(lens[0], 12);
    new_dir(dir);
    s = open_store(dir);
    snprintf(p, sizeof(p), "%s/tmp", dir);
    rmdir(p);
    write_file(p, "", 0);           /* tmp is now a file: writes fail */
    w = chkpt_snap_begin(s, 0, err, sizeof(err));
    CHECK(w != NULL);
    if (w) {
        CHECK(chkpt_snap_add_stream(w, data[0], lens[0], 0, err, sizeof(err))
              < 0);
        CHECK_MSG(strstr(err, "cannot create") != NULL, err);
        CHECK(chkpt_snap_commit(w, "{}", 2, path, sizeof(path), err,
                                sizeof(err)) < 0);
    }
    CHECK(count_files(dir, "snapshots") == 0);
    CHECK(count_files(dir, "chunks") == 0);
    unlink(p);
    mkdir(p, 0700);
    /* Inline-only snapshot, then a failing manifest write. */
    w = chkpt_snap_begin(s, 0, err, sizeof(err));
    CHECK(w != NULL);
    if (w) {
        CHECK(chkpt_snap_add_stream(w, "abc", 3, 0, err, sizeof(err)) == 0);
        rmdir(p);
        write_file(p, "", 0);
        CHECK(chkpt_snap_commit(w, "{}", 2, path, sizeof(path), err,
                                sizeof(err)) < 0);
        CHECK(count_files(dir, "snapshots") == 0);
        unlink(p);
        mkdir(p, 0700);
    }
    CHECK(count_files(dir, "tmp") == 0);
    free((void *)data[0]);
    chkpt_store_close(s);
    drop_dir(dir);
}

static void
writer_child(const char *dir, int who)
{
    size_t lens[] = {CHKPT_CHUNK_SIZE * 3 / 2, 300, CHKPT_CHUNK_SIZE};
    const void *data[3];
    char path[PATH_MAX];
    chkpt_store *s = open_store(dir);
    int bad = 0;

    data[0] = random_bytes(lens[0], 1000);          /* same in both */
    for (int i = 0; i < 8; i++) {
        data[1] = random_bytes(lens[1], (unsigned)(who * 100 + i));
        data[2] = random_bytes(lens[2], (unsigned)(who * 100 + i));
        bad |= snap(s, i % 2 ? 1 : 0, data, lens, NULL, 3, path, NULL) != 0;
        free((void *)data[1]);
        free((void *)data[2]);
    }
    free((void *)data[0]);
    chkpt_store_close(s);
    _exit(bad);
}

static void
test_concurrent_writers(void)
{
    char dir[PATH_MAX], err[CHKPT_ERRLEN];
    pid_t pids[2];
    char **paths;
    size_t n;
    int status;

    new_dir(dir);
    /* Both children create the store too. */
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            writer_child(dir, i + 1);
        }
    }
    for (int i = 0; i < 2; i++) {
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK(chkpt_store_list(dir, &paths, &n, err, sizeof(err)) == 0);
    CHECK(n == 16);
    chkpt_free_list(paths, n);
    CHECK_MSG(chkpt_store_verify_all(dir, NULL, NULL, err, sizeof(err)) == 0,
              err);
    CHECK(count_files(dir, "tmp") == 0);
    drop_dir(dir);
}

/* gc waits for a snapshot being written and never takes its chunks. */
static void
test_gc_waits_for_writer(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[CHKPT_ERRLEN], c;
    size_t lens[] = {CHKPT_CHUNK_SIZE * 2};
    const void *data[1];
    chkpt_store *s;
    chkpt_snapwriter *w;
    pid_t pid;
    int status, go[2];

    data[0] = random_bytes(lens[0], 13);
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 0, data, lens, NULL, 1, path, NULL) == 0);
    CHECK(pipe(go) == 0);
    /* The gc process is forked before the writer exists, so that it does
       not inherit the writer's lock. */
    pid = fork();
    if (pid == 0) {
        size_t rs = 0, rc = 0;
        int rcode = -1;
        close(go[1]);
        if (read(go[0], &c, 1) == 1) {
            rcode = chkpt_store_gc(dir, 1, &rs, &rc, err, sizeof(err));
        }
        close(go[0]);
        free((void *)data[0]);
        chkpt_store_close(s);
        _exit(rcode == 0 && rs == 1 && rc == 1 ? 0 : 1);
    }
    close(go[0]);
    w = chkpt_snap_begin(s, 0, err, sizeof(err));
    ((unsigned char *)data[0])[0] ^= 1;
    CHECK(chkpt_snap_add_stream(w, data[0], lens[0], 0, err, sizeof(err))
          == 0);
    CHECK(write(go[1], "g", 1) == 1);
    close(go[1]);
    {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(waitpid(pid, &status, WNOHANG) == 0);     /* gc is waiting */
    CHECK(chkpt_snap_commit(w, "{}", 2, path, sizeof(path), err,
                            sizeof(err)) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(same_streams(path, data, lens, 1));
    CHECK(count_files(dir, "snapshots") == 1);
    free((void *)data[0]);
    chkpt_store_close(s);
    drop_dir(dir);
}

/* ---- driver ------------------------------------------------------------ */

/* A stream of many chunks (more than a batch of the mapping reader, a
 * short last chunk, zstd chunks and a repeated chunk among raw ones) reads
 * and maps whole; a flipped byte in any one of its chunks, first, in the
 * second batch, repeated or last, is found and that chunk named, read or
 * mapped. */
static void
test_many_chunks(void)
{
    char dir[PATH_MAX], path[PATH_MAX], chunk[PATH_MAX], err[CHKPT_ERRLEN];
    const size_t cs = CHKPT_CHUNK_SIZE, nchunks = 21;
    size_t lens[] = {(nchunks - 1) * cs + 123};
    const void *data[1];
    unsigned char *p = random_bytes(lens[0], 21);
    size_t damaged[] = {0, 17, 5, nchunks - 1};
    chkpt_store *s;
    void *buf = malloc(lens[0]), *addr;
    size_t maplen;

    memset(p + 5 * cs, 0, cs);          /* compressible: zstd, and */
    memset(p + 6 * cs, 0, cs);          /* the same chunk again */
    memset(p + 18 * cs, 7, cs);
    data[0] = p;
    new_dir(dir);
    s = open_store(dir);
    CHECK(snap(s, 3, data, lens, NULL, 1, path, NULL) == 0);
    CHECK(same_streams(path, data, lens, 1));
    for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
        size_t k = damaged[i];
        size_t n = k == nchunks - 1 ? 123 : cs;
        XXH128_canonical_t c;
        char hex[33];
        XXH128_canonicalFromHash(&c, XXH3_128bits(p + k * cs, n));
        for (int j = 0; j < 16; j++) {
            snprintf(hex + 2 * j, 3, "%02x", c.digest[j]);
        }
        snprintf(chunk, sizeof(chunk), "%s/chunks/%.2s/%s", dir, hex, hex + 2);
        size_t saved_n;
        unsigned char *saved = read_file(chunk, &saved_n);
        flip_byte(chunk, (long)(saved_n / 2));
        chkpt_snapreader *r = chkpt_snap_open(path, err, sizeof(err));
        CHECK(r != NULL);
        if (r) {
            err[0] = '\0';
            CHECK(chkpt_snap_read_stream(r, 0, buf, err, sizeof(err)) < 0);
            CHECK_MSG(strstr(err, hex) && strstr(err, "is damaged"), err);
            err[0] = '\0';
            CHECK(chkpt_snap_map_stream(r, 0, &addr, &maplen, err,
                                        sizeof(err)) < 0);
            CHECK_MSG(strstr(err, hex) && strstr(err, "is damaged"), err);
            chkpt_snap_close(r);
        }
        write_file(chunk, saved, saved_n);
        free(saved);
    }
    CHECK(same_streams(path, data, lens, 1));
    free(buf);
    free(p);
    chkpt_store_close(s);
    drop_dir(dir);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

int
main(void)
{
    static const test_case tests[] = {
        {"round_trip", test_round_trip},
        {"dedup", test_dedup},
        {"zstd", test_zstd},
        {"damaged_chunk", test_damaged_chunk},
        {"many_chunks", test_many_chunks},
        {"damaged_manifest", test_damaged_manifest},
        {"newer_format", test_newer_format},
        {"list_order", test_list_order},
        {"gc", test_gc},
        {"gc_budget", test_gc_budget},
        {"gc_budget_pinned", test_gc_budget_pinned},
        {"gc_under_reader", test_gc_under_reader},
        {"permissions", test_permissions},
        {"relocatable", test_relocatable},
        {"write_error", test_write_error},
        {"concurrent_writers", test_concurrent_writers},
        {"gc_waits_for_writer", test_gc_waits_for_writer},
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
