/* store.c: the on-disk snapshot store (see store.h, docs/FORMAT.md).
 *
 * Pure C, no Python, no global mutable state, no locks but the flock on
 * DIR/lock: a forked child may run the writer on a copy-on-write image.
 *
 * Crash safety rests on three rules:
 *   - a file becomes visible under its final name only once it is complete
 *     and fsynced (written in DIR/tmp, then link()ed or rename()d);
 *   - chunks (and their directories) are durable before the manifest that
 *     references them is published;
 *   - every byte read back is checked against a checksum before use.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

/* libxxhash built with its x86 dispatcher (Debian's is) has AVX2/AVX-512
 * variants of XXH3 behind *_dispatch: hashing a chunk that is not in the
 * CPU cache then goes at memory speed, twice the SSE2 default's (it is most
 * of chkpt.load's time). Weak, so a libxxhash without them still links and
 * the plain functions are used. */
#if defined(__x86_64__) && defined(__has_include)
#if __has_include(<xxh_x86dispatch.h>)
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#pragma weak XXH3_64bits_dispatch
#pragma weak XXH3_128bits_dispatch
#define CHKPT_XXH_DISPATCH 1
#endif
#endif

#define FORMAT_PREFIX "chkpt-store "
#define MANIFEST_MAGIC "CHKPTSNP"       /* 8 bytes */
#define MANIFEST_VERSION 1
#define MANIFEST_HEADER 32              /* magic, version, flags, chunk size,
                                           reserved, meta length */
#define MANIFEST_MAX ((uint64_t)1 << 31)
#define CHUNK_MAGIC "CKCH"
#define CHUNK_VERSION 1
#define TRAILER_SIZE 40
#define INLINE_MAX 4096                 /* streams shorter than this are inline */
#define KIND_INLINE 0
#define KIND_CHUNKED 1
#define COMP_NONE 0
#define COMP_ZSTD 1
#define MIN_CHUNK_SIZE ((uint32_t)1 << 16)  /* page-aligned for 64 KiB pages */
#define MAX_CHUNK_SIZE ((uint32_t)1 << 26)
#define HASH_LEN 16
#define HEX_LEN 32
#define PENDING_MAX 32                  /* chunks fsynced together */

/* The fuzz target builds with CHKPT_FUZZING so that mutated inputs get past
 * the checksums into the parsers and bounds checks behind them; it turns
 * them back on to check that what is read is refused or exact. (The hash of
 * a chunk's raw content, which names the chunk, is always checked.) A
 * mutable global, but only in that test build: the store has no object that
 * lives across the calls the target makes. */
#ifdef CHKPT_FUZZING
int chkpt_fuzz_check_sums;
#define SUM_MISMATCH(cond) (chkpt_fuzz_check_sums && (cond))
#else
#define SUM_MISMATCH(cond) (cond)
#endif

struct chkpt_store {
    char *dir;
    _Atomic unsigned long seq;  /* makes snapshot ids unique in the process */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Plain words for the errors a user can act on. */
static const char *
errno_text(int e)
{
    switch (e) {
    case ENOSPC: return "no space left on device";
    case EDQUOT: return "disk quota exceeded";
    case EACCES: return "permission denied";
    case EPERM: return "operation not permitted";
    case EROFS: return "read-only file system";
    case ENOENT: return "no such file or directory";
    case EIO: return "input/output error";
    default: return strerror(e);
    }
}

/* "<what> <path>: <reason>", keeping errno for the caller. */
static void
sys_err(char *err, size_t errlen, const char *what, const char *path)
{
    int e = errno;

    seterr(err, errlen, "%s %s: %s", what, path, errno_text(e));
    errno = e;
}

/* snprintf into a PATH_MAX buffer; -1 (ENAMETOOLONG) if it does not fit. */
static int
mkpath(char *buf, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static void
put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void
put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void
put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint16_t
get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void
hex_of(const unsigned char *h, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < HASH_LEN; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[HEX_LEN] = '\0';
}

static int
unhex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Parses 32 lowercase hex digits (dir part + file part) into a hash. */
static int
hash_of_hex(const char *hex, unsigned char *h)
{
    for (int i = 0; i < HASH_LEN; i++) {
        int a = unhex(hex[2 * i]), b = unhex(hex[2 * i + 1]);
        if (a < 0 || b < 0) {
            return -1;
        }
        h[i] = (unsigned char)(a << 4 | b);
    }
    return 0;
}

static XXH64_hash_t
hash64(const void *data, size_t len)
{
#ifdef CHKPT_XXH_DISPATCH
    if (XXH3_64bits_dispatch != NULL) {
        return XXH3_64bits_dispatch(data, len);
    }
#endif
    return XXH3_64bits(data, len);
}

static void
hash128(const void *data, size_t len, unsigned char *out)
{
    XXH128_canonical_t c;
    XXH128_hash_t h;
#ifdef CHKPT_XXH_DISPATCH
    if (XXH3_128bits_dispatch != NULL) {
        h = XXH3_128bits_dispatch(data, len);
    }
    else
#endif
    {
        h = XXH3_128bits(data, len);
    }
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, HASH_LEN);
}

static int
write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 0 on success, -1 with errno on error; a short file gives errno 0. */
static int
pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n > 0) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (k == 0) {
            errno = 0;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int
fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (fsync(fd) < 0 && errno != EINVAL) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

static int
mkdir_ok(const char *path, int *created)
{
    if (mkdir(path, 0700) == 0) {
        if (created) {
            *created = 1;
        }
        return 0;
    }
    if (errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            return 0;
        }
        errno = ENOTDIR;
    }
    return -1;
}

static int
lock_store(const char *dir, int how, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int fd;

    if (mkpath(path, "%s/lock", dir) < 0) {
        sys_err(err, errlen, "cannot lock store", dir);
        return -1;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        sys_err(err, errlen, "cannot open lock file", path);
        return -1;
    }
    while (flock(fd, how) < 0) {
        if (errno != EINTR) {
            sys_err(err, errlen, "cannot lock", path);
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void
unlock_store(int fd)
{
    if (fd >= 0) {
        /* Explicit unlock: a forked child may share this open file
           description, and close() alone would leave the lock held. */
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* A unique name in DIR/tmp: pid, an address, a counter and the clock. */
static int
open_tmp(const char *dir, const char *kind, const void *owner,
         char *path, char *err, size_t errlen)
{
    struct timespec ts;

    for (unsigned i = 0; i < 1000; i++) {
        int fd;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (mkpath(path, "%s/tmp/%s-%ld-%lx-%ld%09ld-%u", dir, kind,
                   (long)getpid(), (unsigned long)(uintptr_t)owner,
                   (long)ts.tv_sec, (long)ts.tv_nsec, i) < 0) {
            sys_err(err, errlen, "cannot create a file in", dir);
            return -1;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            return fd;
        }
        if (errno != EEXIST) {
            sys_err(err, errlen, "cannot create", path);
            return -1;
        }
    }
    errno = EEXIST;
    sys_err(err, errlen, "cannot create a temporary file in", dir);
    return -1;
}

/* Writes the bytes of iov to a new temporary file and returns its open
 * descriptor (not yet fsynced). On failure the file is removed. */
static int
write_tmp_open(const char *dir, const char *kind, const void *owner,
               const struct iovec *iov, int niov, char *tmp,
               char *err, size_t errlen)
{
    int fd = open_tmp(dir, kind, owner, tmp, err, errlen);
    if (fd < 0) {
        return -1;
    }
    for (int i = 0; i < niov; i++) {
        if (write_all(fd, iov[i].iov_base, iov[i].iov_len) < 0) {
            int e = errno;
            sys_err(err, errlen, "cannot write", tmp);
            close(fd);
            unlink(tmp);
            errno = e;
            return -1;
        }
    }
    return fd;
}

/* fsync and close a temporary file; on failure it is removed. */
static int
sync_close_tmp(int fd, const char *tmp, char *err, size_t errlen)
{
    int e;

    if (fsync(fd) < 0) {
        e = errno;
        sys_err(err, errlen, "cannot write (fsync)", tmp);
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) < 0) {
        e = errno;
        sys_err(err, errlen, "cannot write (close)", tmp);
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* Writes the bytes of iov to a new temporary file and fsyncs it. On
 * failure the temporary file is removed. */
static int
write_tmp(const char *dir, const char *kind, const void *owner,
          const struct iovec *iov, int niov, char *tmp,
          char *err, size_t errlen)
{
    int fd = write_tmp_open(dir, kind, owner, iov, niov, tmp, err, errlen);
    if (fd < 0) {
        return -1;
    }
    return sync_close_tmp(fd, tmp, err, errlen);
}

/* link() so that an existing file is never replaced; filesystems without
 * hard links fall back to rename(). Returns 0, or -1 with errno (EEXIST
 * when the target exists). On success the temporary name is gone. */
static int
publish(const char *tmp, const char *final)
{
    if (link(tmp, final) == 0) {
        unlink(tmp);
        return 0;
    }
    if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS
        || errno == EMLINK) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0) {
            return 0;
        }
        if (errno == EEXIST) {
            return -1;
        }
        return rename(tmp, final);
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* FORMAT file                                                          */

/* Reads DIR/FORMAT. Returns the version, 0 if the file does not exist,
 * -1 on error (message set). */
static long
read_format(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX], buf[64];
    ssize_t n;
    int fd;
    char *end;
    long v;

    if (mkpath(path, "%s/FORMAT", dir) < 0) {
        sys_err(err, errlen, "cannot open store", dir);
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        sys_err(err, errlen, "cannot read", path);
        return -1;
    }
    do {
        n = read(fd, buf, sizeof(buf) - 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        sys_err(err, errlen, "cannot read", path);
        close(fd);
        return -1;
    }
    close(fd);
    buf[n] = '\0';
    if (strncmp(buf, FORMAT_PREFIX, strlen(FORMAT_PREFIX)) != 0) {
        seterr(err, errlen, "%s is not a chkpt store (bad FORMAT file)", dir);
        return -1;
    }
    errno = 0;
    v = strtol(buf + strlen(FORMAT_PREFIX), &end, 10);
    if (errno != 0 || end == buf + strlen(FORMAT_PREFIX) || *end != '\n'
        || v < 1) {
        seterr(err, errlen, "%s is not a chkpt store (bad FORMAT file)", dir);
        return -1;
    }
    if (v > CHKPT_STORE_VERSION) {
        seterr(err, errlen,
               "store format %ld is newer than this chkpt supports (%d): "
               "upgrade chkpt", v, CHKPT_STORE_VERSION);
        return -1;
    }
    return v;
}

static int
write_format(const char *dir, char *err, size_t errlen)
{
    char tmp[PATH_MAX], path[PATH_MAX], text[32];
    struct iovec iov;
    int n = snprintf(text, sizeof(text), FORMAT_PREFIX "%d\n",
                     CHKPT_STORE_VERSION);

    iov.iov_base = text;
    iov.iov_len = (size_t)n;
    if (mkpath(path, "%s/FORMAT", dir) < 0) {
        sys_err(err, errlen, "cannot create store", dir);
        return -1;
    }
    if (write_tmp(dir, "format", text, &iov, 1, tmp, err, errlen) < 0) {
        return -1;
    }
    if (publish(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) {
            return 0;   /* another process created the store first */
        }
        errno = e;
        sys_err(err, errlen, "cannot create", path);
        return -1;
    }
    if (fsync_path(dir) < 0) {
        sys_err(err, errlen, "cannot sync", dir);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Opening a store                                                      */

/* mkdir -p with mode 0700 for what it creates. */
static int
mkdirs(const char *dir)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);

    if (n == 0 || n >= PATH_MAX) {
        errno = n ? ENAMETOOLONG : ENOENT;
        return -1;
    }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            char c = path[i];
            path[i] = '\0';
            if (mkdir_ok(path, NULL) < 0) {
                return -1;
            }
            path[i] = c;
        }
    }
    return 0;
}

static int check_owner(const char *dir, const char *why, char *err,
                       size_t errlen);

int
chkpt_store_open(const char *dir, int create, chkpt_store **out,
                 char *err, size_t errlen)
{
    static const char *subdirs[] = {"snapshots", "chunks", "tmp"};
    char path[PATH_MAX];
    chkpt_store *s;
    long v;

    *out = NULL;
    if (dir == NULL || dir[0] == '\0') {
        seterr(err, errlen, "empty store directory name");
        return -1;
    }
    v = read_format(dir, err, errlen);
    if (v < 0) {
        return -1;
    }
    if (v == 0) {
        struct stat st;
        if (!create) {
            if (stat(dir, &st) < 0) {
                sys_err(err, errlen, "cannot open store", dir);
            }
            else {
                seterr(err, errlen, "%s is not a chkpt store (no FORMAT file)",
                       dir);
            }
            return -1;
        }
        if (mkdirs(dir) < 0) {
            sys_err(err, errlen, "cannot create store directory", dir);
            return -1;
        }
    }
    /* what is written to a store its owner or others can change could
     * be changed before it is loaded back (or was put there by them) */
    if (create && check_owner(dir, "snapshots are written only to a store "
                              "of yours that nobody else can write", err,
                              errlen) < 0) {
        return -1;
    }
    if (create) {
        int lockfd;
        for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
            if (mkpath(path, "%s/%s", dir, subdirs[i]) < 0
                || mkdir_ok(path, NULL) < 0) {
                sys_err(err, errlen, "cannot create store directory", path);
                return -1;
            }
        }
        if (v == 0) {
            /* Shared lock: gc must not take our temporary file away. */
            lockfd = lock_store(dir, LOCK_SH, err, errlen);
            if (lockfd < 0) {
                return -1;
            }
            if (write_format(dir, err, errlen) < 0) {
                unlock_store(lockfd);
                return -1;
            }
            unlock_store(lockfd);
            if (read_format(dir, err, errlen) < 0) {
                return -1;
            }
        }
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->dir = strdup(dir)) == NULL) {
        free(s);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    atomic_init(&s->seq, 0);
    *out = s;
    return 0;
}

void
chkpt_store_close(chkpt_store *s)
{
    if (s != NULL) {
        free(s->dir);
        free(s);
    }
}

const char *
chkpt_store_dir(const chkpt_store *s)
{
    return s->dir;
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} growbuf;

static int
gb_put(growbuf *b, const void *data, size_t n)
{
    if (n > SIZE_MAX - b->len) {
        return -1;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        unsigned char *p;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) {
                return -1;
            }
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (p == NULL) {
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, data, n);
    }
    b->len += n;
    return 0;
}

static int
gb_put_u64(growbuf *b, uint64_t v)
{
    unsigned char x[8];
    put_u64(x, v);
    return gb_put(b, x, 8);
}

struct chkpt_snapwriter {
    chkpt_store *s;
    int level;
    int lockfd;                 /* shared flock held from begin to commit */
    int failed;                 /* an add_stream failed: commit refuses */
    ZSTD_CCtx *cctx;
    unsigned char *zbuf;
    size_t zcap;
    growbuf table;              /* the stream table, built as streams come */
    uint64_t nstreams;
    uint64_t written;
    unsigned char dirty[256 / 8];   /* chunks/XX dirs to fsync at commit */
    int new_subdir;             /* chunks/ itself needs an fsync too */
    /* Chunks written but not yet fsynced and linked: fsyncing a batch
       after the kernel has started writing it back is about twice as
       fast as one fsync per chunk. */
    int npending;
    struct {
        int fd;
        char *tmp;
        unsigned char hash[HASH_LEN];
    } pending[PENDING_MAX];
};

chkpt_snapwriter *
chkpt_snap_begin(chkpt_store *s, int compress_level, char *err, size_t errlen)
{
    chkpt_snapwriter *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    w->s = s;
    w->level = compress_level < 0 ? 0 : compress_level;
    if (w->level > ZSTD_maxCLevel()) {
        w->level = ZSTD_maxCLevel();
    }
    w->lockfd = lock_store(s->dir, LOCK_SH, err, errlen);
    if (w->lockfd < 0) {
        free(w);
        return NULL;
    }
    return w;
}

static void
drop_pending(chkpt_snapwriter *w)
{
    for (int i = 0; i < w->npending; i++) {
        close(w->pending[i].fd);
        unlink(w->pending[i].tmp);
        free(w->pending[i].tmp);
    }
    w->npending = 0;
}

/* Makes the pending chunks durable and gives them their names. */
static int
flush_pending(chkpt_snapwriter *w, char *err, size_t errlen)
{
    const char *dir = w->s->dir;
    int i, rc = 0;

    for (i = 0; i < w->npending && rc == 0; i++) {
        char hex[HEX_LEN + 1], sub[PATH_MAX], final[PATH_MAX];
        const char *tmp = w->pending[i].tmp;
        int created = 0;

        hex_of(w->pending[i].hash, hex);
        if (sync_close_tmp(w->pending[i].fd, tmp, err, errlen) < 0) {
            rc = -1;
            break;
        }
        if (mkpath(sub, "%s/chunks/%.2s", dir, hex) < 0
            || mkpath(final, "%s/%s", sub, hex + 2) < 0
            || mkdir_ok(sub, &created) < 0) {
            sys_err(err, errlen, "cannot create directory", sub);
            unlink(tmp);
            rc = -1;
            break;
        }
        if (publish(tmp, final) < 0) {
            /* EEXIST: a damaged copy was found when writing, or a
               concurrent writer stored the same content: rename()
               replaces it atomically. */
            if (errno != EEXIST || rename(tmp, final) < 0) {
                sys_err(err, errlen, "cannot store chunk", final);
                unlink(tmp);
                rc = -1;
                break;
            }
        }
        w->dirty[w->pending[i].hash[0] / 8] |=
            (unsigned char)(1u << (w->pending[i].hash[0] % 8));
        w->new_subdir |= created;
    }
    /* Entries before i are done; i itself was cleaned up on failure. */
    for (int j = 0; j < i + (rc < 0); j++) {
        free(w->pending[j].tmp);
    }
    if (rc < 0) {
        for (int j = i + 1; j < w->npending; j++) {
            close(w->pending[j].fd);
            unlink(w->pending[j].tmp);
            free(w->pending[j].tmp);
        }
        w->failed = 1;
    }
    w->npending = 0;
    return rc;
}

void
chkpt_snap_abort(chkpt_snapwriter *w)
{
    if (w == NULL) {
        return;
    }
    drop_pending(w);
    unlock_store(w->lockfd);
    ZSTD_freeCCtx(w->cctx);
    free(w->zbuf);
    free(w->table.p);
    free(w);
}

uint64_t
chkpt_snap_bytes_written(const chkpt_snapwriter *w)
{
    return w->written;
}

static void
make_trailer(unsigned char *t, int comp, uint64_t raw_len,
             const void *stored, uint64_t stored_len)
{
    memcpy(t, CHUNK_MAGIC, 4);
    t[4] = CHUNK_VERSION;
    t[5] = (unsigned char)comp;
    put_u16(t + 6, 0);
    put_u64(t + 8, raw_len);
    put_u64(t + 16, stored_len);
    put_u64(t + 24, hash64(stored, (size_t)stored_len));
    put_u64(t + 32, XXH3_64bits(t, 32));
}

/* Parsed chunk trailer. */
typedef struct {
    int comp;
    uint64_t raw_len, stored_len, stored_hash;
} trailer;

/* Checks a trailer read from a file of size fsize. Returns NULL if it is
 * sound, else a short reason. */
static const char *
check_trailer(const unsigned char *t, uint64_t fsize, uint64_t want_raw,
              trailer *out)
{
    if (memcmp(t, CHUNK_MAGIC, 4) != 0) {
        return "bad trailer magic";
    }
    if (SUM_MISMATCH(get_u64(t + 32) != XXH3_64bits(t, 32))) {
        return "trailer checksum mismatch";
    }
    if (t[4] != CHUNK_VERSION || get_u16(t + 6) != 0) {
        return "unknown chunk version";
    }
    out->comp = t[5];
    out->raw_len = get_u64(t + 8);
    out->stored_len = get_u64(t + 16);
    out->stored_hash = get_u64(t + 24);
    if (out->comp != COMP_NONE && out->comp != COMP_ZSTD) {
        return "unknown compression";
    }
    if (out->raw_len != want_raw) {
        return "wrong length";
    }
    if (out->stored_len != fsize - TRAILER_SIZE) {
        return "truncated or wrong size";
    }
    if (out->comp == COMP_NONE && out->stored_len != out->raw_len) {
        return "wrong length";
    }
    if (out->comp == COMP_ZSTD
        && out->stored_len > ZSTD_compressBound(MAX_CHUNK_SIZE)) {
        return "wrong length";
    }
    return NULL;
}

/* Is a sound chunk of raw length n already at path? 1 yes, 0 no (missing
 * or damaged: it will be replaced), -1 on error. */
static int
chunk_present(const char *path, uint64_t n)
{
    unsigned char t[TRAILER_SIZE];
    struct stat st;
    trailer tr;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return (errno == ENOENT) ? 0 : -1;
    }
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < TRAILER_SIZE
        || pread_all(fd, t, TRAILER_SIZE,
                     (uint64_t)st.st_size - TRAILER_SIZE) < 0
        || check_trailer(t, (uint64_t)st.st_size, n, &tr) != NULL) {
        close(fd);
        return 0;
    }
    close(fd);
    return 1;
}

static int
store_chunk(chkpt_snapwriter *w, const unsigned char *data, size_t n,
            unsigned char *hash, char *err, size_t errlen)
{
    const char *dir = w->s->dir;
    char hex[HEX_LEN + 1], sub[PATH_MAX], final[PATH_MAX], tmp[PATH_MAX];
    unsigned char t[TRAILER_SIZE];
    const void *stored = data;
    size_t stored_len = n;
    int comp = COMP_NONE, present, fd, pend;
    struct iovec iov[2];

    hash128(data, n, hash);
    hex_of(hash, hex);
    if (mkpath(sub, "%s/chunks/%.2s", dir, hex) < 0
        || mkpath(final, "%s/%s", sub, hex + 2) < 0) {
        sys_err(err, errlen, "cannot write chunk in", dir);
        return -1;
    }
    for (int i = 0; i < w->npending; i++) {
        if (memcmp(w->pending[i].hash, hash, HASH_LEN) == 0) {
            return 0;   /* same content earlier in this snapshot */
        }
    }
    present = chunk_present(final, n);
    if (present < 0) {
        sys_err(err, errlen, "cannot read chunk", final);
        return -1;
    }
    if (present) {
        return 0;   /* dedup: same content already stored */
    }
    if (w->level > 0) {
        size_t zn;
        if (w->cctx == NULL) {
            w->cctx = ZSTD_createCCtx();
            w->zcap = ZSTD_compressBound(CHKPT_CHUNK_SIZE);
            w->zbuf = malloc(w->zcap);
            if (w->cctx == NULL || w->zbuf == NULL) {
                seterr(err, errlen, "out of memory");
                return -1;
            }
        }
        zn = ZSTD_compressCCtx(w->cctx, w->zbuf, w->zcap, data, n, w->level);
        /* Keep raw data (mappable) unless compression saves something. */
        if (!ZSTD_isError(zn) && zn < n) {
            stored = w->zbuf;
            stored_len = zn;
            comp = COMP_ZSTD;
        }
    }
    make_trailer(t, comp, n, stored, stored_len);
    iov[0].iov_base = (void *)stored;
    iov[0].iov_len = stored_len;
    iov[1].iov_base = t;
    iov[1].iov_len = TRAILER_SIZE;
    if (w->npending == PENDING_MAX && flush_pending(w, err, errlen) < 0) {
        return -1;
    }
    fd = write_tmp_open(dir, "chunk", w, iov, 2, tmp, err, errlen);
    if (fd < 0) {
        return -1;
    }
    /* Start writeback now; flush_pending waits for it. */
    (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    pend = w->npending;
    w->pending[pend].tmp = strdup(tmp);
    if (w->pending[pend].tmp == NULL) {
        close(fd);
        unlink(tmp);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    w->pending[pend].fd = fd;
    memcpy(w->pending[pend].hash, hash, HASH_LEN);
    w->npending++;
    w->written += stored_len + TRAILER_SIZE;
    return 0;
}

long
chkpt_snap_add_stream(chkpt_snapwriter *w, const void *data, size_t len,
                      int flags, char *err, size_t errlen)
{
    const unsigned char *p = data;
    long index;

    if (w->failed) {
        seterr(err, errlen, "snapshot writer is in a failed state");
        return -1;
    }
    if (len > 0 && data == NULL) {
        seterr(err, errlen, "stream data is NULL");
        return -1;
    }
    index = (long)w->nstreams;
    if (len < INLINE_MAX && !(flags & CHKPT_STREAM_SHARED)) {
        unsigned char kind = KIND_INLINE;
        if (gb_put_u64(&w->table, len) < 0 || gb_put(&w->table, &kind, 1) < 0
            || gb_put(&w->table, p, len) < 0) {
            goto nomem;
        }
    }
    else {
        unsigned char kind = KIND_CHUNKED;
        if (gb_put_u64(&w->table, len) < 0
            || gb_put(&w->table, &kind, 1) < 0) {
            goto nomem;
        }
        for (size_t off = 0; off < len; off += CHKPT_CHUNK_SIZE) {
            size_t n = len - off < CHKPT_CHUNK_SIZE ? len - off
                                                     : CHKPT_CHUNK_SIZE;
            unsigned char hash[HASH_LEN];
            if (store_chunk(w, p + off, n, hash, err, errlen) < 0) {
                w->failed = 1;
                return -1;
            }
            if (gb_put(&w->table, hash, HASH_LEN) < 0) {
                goto nomem;
            }
        }
    }
    w->nstreams++;
    return index;
nomem:
    w->failed = 1;
    seterr(err, errlen, "out of memory");
    return -1;
}

/* Durability of the chunks written so far: their dirs, then chunks/. */
static int
sync_chunk_dirs(chkpt_snapwriter *w, char *err, size_t errlen)
{
    char path[PATH_MAX];

    for (int i = 0; i < 256; i++) {
        if (w->dirty[i / 8] & (1u << (i % 8))) {
            if (mkpath(path, "%s/chunks/%02x", w->s->dir, i) < 0
                || fsync_path(path) < 0) {
                sys_err(err, errlen, "cannot sync", path);
                return -1;
            }
        }
    }
    if (w->new_subdir) {
        if (mkpath(path, "%s/chunks", w->s->dir) < 0
            || fsync_path(path) < 0) {
            sys_err(err, errlen, "cannot sync", path);
            return -1;
        }
    }
    return 0;
}

/* Snapshot id: UTC time to the nanosecond, pid, per-store sequence. The
 * fixed-width time makes names sort by time. */
static int
make_id(chkpt_snapwriter *w, char *id, size_t idlen)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    unsigned long seq = atomic_fetch_add(&w->s->seq, 1);
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (gmtime_r(&ts.tv_sec, &tm) == NULL
        || strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm) == 0) {
        return -1;
    }
    n = snprintf(id, idlen, "%s.%09ld-%ld-%lu", stamp, (long)ts.tv_nsec,
                 (long)getpid(), seq);
    return (n < 0 || (size_t)n >= idlen) ? -1 : 0;
}

/* Writes the manifest to a temporary file of the store (its path in tmp):
 * header, meta, stream count, stream table, and the checksum of every
 * byte before it. */
static int
write_manifest_tmp(chkpt_snapwriter *w, const void *meta, size_t meta_len,
                   char *tmp, char *err, size_t errlen)
{
    unsigned char header[MANIFEST_HEADER], count[8], sum[HASH_LEN];
    struct iovec iov[5];

    memcpy(header, MANIFEST_MAGIC, 8);
    put_u32(header + 8, MANIFEST_VERSION);
    put_u32(header + 12, 0);                   /* flags */
    put_u32(header + 16, CHKPT_CHUNK_SIZE);
    put_u32(header + 20, 0);                   /* reserved */
    put_u64(header + 24, meta_len);
    put_u64(count, w->nstreams);

    /* The checksum covers every byte before it. */
    XXH3_state_t *st = XXH3_createState();
    if (st == NULL || XXH3_128bits_reset(st) == XXH_ERROR) {
        XXH3_freeState(st);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    XXH3_128bits_update(st, header, sizeof(header));
    XXH3_128bits_update(st, meta, meta_len);
    XXH3_128bits_update(st, count, sizeof(count));
    XXH3_128bits_update(st, w->table.p, w->table.len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    memcpy(sum, c.digest, HASH_LEN);
    XXH3_freeState(st);

    iov[0].iov_base = header;
    iov[0].iov_len = sizeof(header);
    iov[1].iov_base = (void *)meta;
    iov[1].iov_len = meta_len;
    iov[2].iov_base = count;
    iov[2].iov_len = sizeof(count);
    iov[3].iov_base = w->table.p;
    iov[3].iov_len = w->table.len;
    iov[4].iov_base = sum;
    iov[4].iov_len = HASH_LEN;
    return write_tmp(w->s->dir, "snap", w, iov, 5, tmp, err, errlen);
}

/* Publishes tmp under a fresh snapshot id in snapdir (its path in final);
 * tmp is removed on failure. */
static int
publish_manifest(chkpt_snapwriter *w, const char *tmp, const char *snapdir,
                 char *final, size_t path_len, int check_len, char *err,
                 size_t errlen)
{
    char id[96];
    /* link() refuses to replace: a clash of ids only costs a retry. */
    for (int attempt = 0; attempt < 100; attempt++) {
        if (make_id(w, id, sizeof(id)) < 0
            || mkpath(final, "%s/%s.ckpt", snapdir, id) < 0) {
            seterr(err, errlen, "cannot name snapshot in %s", snapdir);
            unlink(tmp);
            return -1;
        }
        if (check_len && strlen(final) >= path_len) {
            seterr(err, errlen, "snapshot path buffer too small");
            unlink(tmp);
            return -1;
        }
        if (publish(tmp, final) == 0) {
            return 0;
        }
        if (errno != EEXIST) {
            sys_err(err, errlen, "cannot publish snapshot", final);
            unlink(tmp);
            return -1;
        }
    }
    seterr(err, errlen, "cannot publish snapshot in %s: name clash", snapdir);
    unlink(tmp);
    return -1;
}

int
chkpt_snap_commit(chkpt_snapwriter *w, const void *meta, size_t meta_len,
                  char *path_out, size_t path_len, char *err, size_t errlen)
{
    const char *dir = w->s->dir;
    char tmp[PATH_MAX], final[PATH_MAX], snapdir[PATH_MAX];
    int rc = -1;

    if (w->failed) {
        seterr(err, errlen, "snapshot not written: a stream failed to write");
        goto done;
    }
    if (meta_len > 0 && meta == NULL) {
        seterr(err, errlen, "snapshot metadata is NULL");
        goto done;
    }
    if (flush_pending(w, err, errlen) < 0
        || sync_chunk_dirs(w, err, errlen) < 0
        || write_manifest_tmp(w, meta, meta_len, tmp, err, errlen) < 0) {
        goto done;
    }
    if (mkpath(snapdir, "%s/snapshots", dir) < 0) {
        sys_err(err, errlen, "cannot publish snapshot in", dir);
        unlink(tmp);
        goto done;
    }
    if (publish_manifest(w, tmp, snapdir, final, path_len, path_out != NULL,
                         err, errlen) < 0) {
        goto done;
    }
    if (fsync_path(snapdir) < 0) {
        /* Visible but maybe not durable: take it back rather than claim a
           durable snapshot. */
        sys_err(err, errlen, "cannot sync", snapdir);
        unlink(final);
        goto done;
    }
    if (path_out != NULL) {
        snprintf(path_out, path_len, "%s", final);
    }
    rc = 0;
done:
    chkpt_snap_abort(w);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */

typedef struct {
    uint64_t len;
    int is_inline;
    const unsigned char *data;  /* inline bytes, or nchunks hashes */
    uint64_t nchunks;
} rstream;

struct chkpt_snapreader {
    unsigned char *buf;         /* the whole manifest */
    size_t size;
    const unsigned char *meta;
    size_t meta_len;
    size_t nstreams;
    rstream *streams;
    uint32_t chunk_size;
    char *chunks_dir;
    char *path;
    size_t pagesize;
    ZSTD_DCtx *dctx;
    unsigned char *zbuf;        /* compressed chunk bytes */
    size_t zcap;
    unsigned char *scratch;     /* one raw chunk, for verify */
};

void
chkpt_snap_close(chkpt_snapreader *r)
{
    if (r == NULL) {
        return;
    }
    free(r->buf);
    free(r->streams);
    free(r->chunks_dir);
    free(r->path);
    ZSTD_freeDCtx(r->dctx);
    free(r->zbuf);
    free(r->scratch);
    free(r);
}

/* Directory holding the manifest ("." if none). */
static char *
dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d;

    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    d = malloc((size_t)(slash - path) + 1);
    if (d != NULL) {
        memcpy(d, path, (size_t)(slash - path));
        d[slash - path] = '\0';
    }
    return d;
}

/* The stream table of the manifest in r->buf, from pos (its count) to end
 * (the checksum): 0 when sound and exactly filling it, -1 when damaged, -2
 * out of memory. */
static int
parse_stream_table(chkpt_snapreader *r, size_t pos, size_t end)
{
    const unsigned char *b = r->buf;
    uint32_t cs = r->chunk_size;
    uint64_t n;

    n = get_u64(b + pos);
    pos += 8;
    if (n > (end - pos) / 9) {     /* every stream takes at least 9 bytes */
        return -1;
    }
    r->nstreams = (size_t)n;
    r->streams = calloc(r->nstreams ? r->nstreams : 1, sizeof(rstream));
    if (r->streams == NULL) {
        return -2;
    }
    for (size_t i = 0; i < r->nstreams; i++) {
        rstream *s = &r->streams[i];
        if (end - pos < 9) {
            return -1;
        }
        s->len = get_u64(b + pos);
        s->is_inline = (b[pos + 8] == KIND_INLINE);
        if (b[pos + 8] != KIND_INLINE && b[pos + 8] != KIND_CHUNKED) {
            return -1;
        }
        pos += 9;
        if (s->len > (uint64_t)SIZE_MAX - cs) {
            return -1;
        }
        if (s->is_inline) {
            if (s->len > end - pos) {
                return -1;
            }
            s->data = b + pos;
            pos += (size_t)s->len;
        }
        else {
            s->nchunks = s->len / cs + (s->len % cs != 0);
            if (s->nchunks > (end - pos) / HASH_LEN) {
                return -1;
            }
            s->data = b + pos;
            pos += (size_t)s->nchunks * HASH_LEN;
        }
    }
    return pos == end ? 0 : -1;
}

static int
parse_manifest(chkpt_snapreader *r, const char *path, char *err,
               size_t errlen)
{
    const unsigned char *b = r->buf;
    size_t end, pos;
    uint64_t meta_len;
    uint32_t version, flags, cs;
    unsigned char sum[HASH_LEN];

    if (r->size < 8 || memcmp(b, MANIFEST_MAGIC, 8) != 0) {
        seterr(err, errlen, "%s is not a chkpt snapshot (bad magic)", path);
        return -1;
    }
    if (r->size < MANIFEST_HEADER + 8 + HASH_LEN) {
        seterr(err, errlen, "snapshot %s is damaged (truncated manifest)",
               path);
        return -1;
    }
    version = get_u32(b + 8);
    if (version > MANIFEST_VERSION) {
        seterr(err, errlen,
               "snapshot format %u of %s is newer than this chkpt supports "
               "(%d): upgrade chkpt", version, path, MANIFEST_VERSION);
        return -1;
    }
    end = r->size - HASH_LEN;
    hash128(b, end, sum);
    if (SUM_MISMATCH(memcmp(sum, b + end, HASH_LEN) != 0)) {
        seterr(err, errlen, "snapshot %s is damaged (manifest checksum "
               "mismatch: truncated or modified)", path);
        return -1;
    }
    flags = get_u32(b + 12);
    cs = get_u32(b + 16);
    if (version < 1 || flags != 0 || get_u32(b + 20) != 0
        || cs < MIN_CHUNK_SIZE || cs > MAX_CHUNK_SIZE || (cs & (cs - 1))) {
        seterr(err, errlen, "snapshot %s is damaged (bad manifest header)",
               path);
        return -1;
    }
    r->chunk_size = cs;
    meta_len = get_u64(b + 24);
    pos = MANIFEST_HEADER;
    if (meta_len > end - pos) {
        goto damaged;
    }
    r->meta = b + pos;
    r->meta_len = (size_t)meta_len;
    pos += (size_t)meta_len;
    if (end - pos < 8) {
        goto damaged;
    }
    switch (parse_stream_table(r, pos, end)) {
    case -2:
        seterr(err, errlen, "out of memory");
        return -1;
    case -1:
        goto damaged;
    default:
        return 0;
    }
damaged:
    seterr(err, errlen, "snapshot %s is damaged (bad stream table)", path);
    return -1;
}

chkpt_snapreader *
chkpt_snap_open(const char *manifest_path, char *err, size_t errlen)
{
    chkpt_snapreader *r = NULL;
    struct stat st;
    char *mdir = NULL, storedir[PATH_MAX];
    int fd;
    long ps;

    fd = open(manifest_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sys_err(err, errlen, "cannot open snapshot", manifest_path);
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        sys_err(err, errlen, "cannot open snapshot", manifest_path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        seterr(err, errlen, "%s is not a chkpt snapshot (not a file)",
               manifest_path);
        goto fail;
    }
    if ((uint64_t)st.st_size > MANIFEST_MAX) {
        seterr(err, errlen, "%s is not a chkpt snapshot (too large)",
               manifest_path);
        goto fail;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    r->size = (size_t)st.st_size;
    r->buf = malloc(r->size ? r->size : 1);
    if (r->buf == NULL) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    if (pread_all(fd, r->buf, r->size, 0) < 0) {
        if (errno == 0) {
            seterr(err, errlen, "snapshot %s is damaged (truncated manifest)",
                   manifest_path);
        }
        else {
            sys_err(err, errlen, "cannot read snapshot", manifest_path);
        }
        goto fail;
    }
    close(fd);
    fd = -1;
    if (parse_manifest(r, manifest_path, err, errlen) < 0) {
        goto fail;
    }
    /* The store is dirname(dirname(manifest)): relocatable, no absolute
       paths inside. A FORMAT file, when present, must not be newer. */
    mdir = dir_of(manifest_path);
    if (mdir == NULL || mkpath(storedir, "%s/..", mdir) < 0) {
        seterr(err, errlen, "out of memory or path too long");
        goto fail;
    }
    if (read_format(storedir, err, errlen) < 0) {
        goto fail;
    }
    r->chunks_dir = malloc(strlen(storedir) + sizeof("/chunks"));
    r->path = strdup(manifest_path);
    if (r->chunks_dir == NULL || r->path == NULL) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    strcpy(r->chunks_dir, storedir);
    strcat(r->chunks_dir, "/chunks");
    ps = sysconf(_SC_PAGESIZE);
    r->pagesize = ps > 0 ? (size_t)ps : 4096;
    free(mdir);
    return r;
fail:
    if (fd >= 0) {
        close(fd);
    }
    free(mdir);
    chkpt_snap_close(r);
    return NULL;
}

const char *
chkpt_snap_meta(const chkpt_snapreader *r, size_t *len)
{
    if (len != NULL) {
        *len = r->meta_len;
    }
    return (const char *)r->meta;
}

size_t
chkpt_snap_nstreams(const chkpt_snapreader *r)
{
    return r->nstreams;
}

uint64_t
chkpt_snap_stream_len(const chkpt_snapreader *r, size_t i)
{
    return i < r->nstreams ? r->streams[i].len : 0;
}

/* What the steps of fetch_chunk return: done, failed with err written, or
 * damaged with *why saying how (the caller names the chunk). */
enum { FETCH_OK = 0, FETCH_FAILED = -1, FETCH_DAMAGED = -2 };

/* Opens the chunk file named hex; -1 with err written if it cannot be. */
static int
open_chunk(const chkpt_snapreader *r, size_t si, const char *hex, char *path,
           char *err, size_t errlen)
{
    if (mkpath(path, "%s/%.2s/%s", r->chunks_dir, hex, hex + 2) < 0) {
        sys_err(err, errlen, "cannot read chunk in", r->chunks_dir);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        return fd;
    }
    int open_errno = errno;
    if (open_errno == ENOENT && access(r->path, F_OK) < 0 && errno == ENOENT) {
        /* readers take no lock: gc may remove a snapshot being read */
        seterr(err, errlen, "snapshot %s was removed (gc) while it was "
               "being read", r->path);
    }
    else if (open_errno == ENOENT) {
        seterr(err, errlen, "chunk %s of stream %zu is missing (%s)",
               hex, si, path);
    }
    else {
        errno = open_errno;
        sys_err(err, errlen, "cannot read chunk", path);
    }
    return -1;
}

/* pread_all of the chunk file: a short read is damage, an error fails. */
static int
pread_chunk(int fd, void *dst, size_t n, uint64_t off, const char *path,
            const char **why, char *err, size_t errlen)
{
    if (pread_all(fd, dst, n, off) == 0) {
        return FETCH_OK;
    }
    if (errno != 0) {
        sys_err(err, errlen, "cannot read chunk", path);
        return FETCH_FAILED;
    }
    *why = "truncated";
    return FETCH_DAMAGED;
}

/* Reads and checks the trailer of the open chunk file into tr. */
static int
read_trailer(int fd, uint64_t want, const char *path, trailer *tr,
             const char **why, char *err, size_t errlen)
{
    unsigned char t[TRAILER_SIZE];
    struct stat st;
    if (fstat(fd, &st) < 0) {
        sys_err(err, errlen, "cannot read chunk", path);
        return FETCH_FAILED;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < TRAILER_SIZE) {
        *why = "truncated";
        return FETCH_DAMAGED;
    }
    int rc = pread_chunk(fd, t, TRAILER_SIZE,
                         (uint64_t)st.st_size - TRAILER_SIZE, path, why, err,
                         errlen);
    if (rc != FETCH_OK) {
        return rc;
    }
    *why = check_trailer(t, (uint64_t)st.st_size, want, tr);
    return *why != NULL ? FETCH_DAMAGED : FETCH_OK;
}

/* A raw chunk: its whole pages mapped when map, the rest read. Each
 * mapped chunk is a mapping of its own: past the process's limit on them
 * (vm.max_map_count, 65530 by default: 64 GiB of chunks), mmap fails with
 * ENOMEM and the chunk is read into the reserved region instead. */
static int
read_raw_chunk(const chkpt_snapreader *r, int fd, unsigned char *dst,
               uint64_t want, int map, const char *path, const char **why,
               char *err, size_t errlen)
{
    size_t whole = map ? (size_t)want & ~(r->pagesize - 1) : 0;
    if (whole > 0
        && mmap(dst, whole, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED) {
        if (errno != ENOMEM) {
            sys_err(err, errlen, "cannot map chunk", path);
            return FETCH_FAILED;
        }
        whole = 0;
    }
    return pread_chunk(fd, dst + whole, (size_t)want - whole, whole, path,
                       why, err, errlen);
}

/* A zstd chunk: read whole into r->zbuf, checked, then decompressed. */
static int
read_zstd_chunk(chkpt_snapreader *r, int fd, const trailer *tr,
                unsigned char *dst, uint64_t want, const char *path,
                const char **why, char *err, size_t errlen)
{
    if (r->dctx == NULL) {
        r->dctx = ZSTD_createDCtx();
        if (r->dctx == NULL) {
            seterr(err, errlen, "out of memory");
            return FETCH_FAILED;
        }
    }
    if (tr->stored_len > r->zcap) {
        unsigned char *p = realloc(r->zbuf, (size_t)tr->stored_len);
        if (p == NULL) {
            seterr(err, errlen, "out of memory");
            return FETCH_FAILED;
        }
        r->zbuf = p;
        r->zcap = (size_t)tr->stored_len;
    }
    int rc = pread_chunk(fd, r->zbuf, (size_t)tr->stored_len, 0, path, why,
                         err, errlen);
    if (rc != FETCH_OK) {
        return rc;
    }
    /* Check before decompressing: never feed damaged bytes to zstd. */
    if (SUM_MISMATCH(hash64(r->zbuf, (size_t)tr->stored_len)
                     != tr->stored_hash)) {
        *why = "checksum mismatch";
        return FETCH_DAMAGED;
    }
    size_t zr = ZSTD_decompressDCtx(r->dctx, dst, (size_t)want, r->zbuf,
                                    (size_t)tr->stored_len);
    if (ZSTD_isError(zr) || zr != want) {
        *why = "bad compressed data";
        return FETCH_DAMAGED;
    }
    return FETCH_OK;
}

/* The raw length of chunk k of stream s. */
static uint64_t
chunk_len(const chkpt_snapreader *r, const rstream *s, uint64_t k)
{
    uint64_t off = k * r->chunk_size;
    return s->len - off < r->chunk_size ? s->len - off : r->chunk_size;
}

/* Puts chunk k of stream si at dst (its raw length), its trailer and
 * compressed bytes checked but not yet its raw data (check_chunk does).
 * With map != 0, dst is page-aligned inside a private region and the
 * chunk's whole pages are mapped from the file rather than copied. fd is
 * the chunk's file already open (closed here), or -1 to open it. */
static int
place_chunk(chkpt_snapreader *r, size_t si, uint64_t k, unsigned char *dst,
            int map, int fd, char *err, size_t errlen)
{
    const rstream *s = &r->streams[si];
    uint64_t want = chunk_len(r, s, k);
    char hex[HEX_LEN + 1], path[PATH_MAX];
    const char *why = NULL;
    trailer tr;

    hex_of(s->data + k * HASH_LEN, hex);
    if (fd >= 0 && mkpath(path, "%s/%.2s/%s", r->chunks_dir, hex, hex + 2) < 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0 && (fd = open_chunk(r, si, hex, path, err, errlen)) < 0) {
        return -1;
    }
    int rc = read_trailer(fd, want, path, &tr, &why, err, errlen);
    if (rc == FETCH_OK) {
        rc = tr.comp == COMP_NONE
             ? read_raw_chunk(r, fd, dst, want, map, path, &why, err, errlen)
             : read_zstd_chunk(r, fd, &tr, dst, want, path, &why, err, errlen);
    }
    close(fd);
    if (rc == FETCH_DAMAGED) {
        seterr(err, errlen, "chunk %s of stream %zu is damaged (%s)", hex, si,
               why);
        return -1;
    }
    return rc == FETCH_OK ? 0 : -1;
}

/* Checks chunk k of stream si, placed at dst, against its name. */
static int
check_chunk(const chkpt_snapreader *r, size_t si, uint64_t k,
            const unsigned char *dst, char *err, size_t errlen)
{
    const rstream *s = &r->streams[si];
    const unsigned char *hash = s->data + k * HASH_LEN;
    unsigned char got[HASH_LEN];

    hash128(dst, (size_t)chunk_len(r, s, k), got);
    if (memcmp(got, hash, HASH_LEN) != 0) {
        char hex[HEX_LEN + 1];
        hex_of(hash, hex);
        seterr(err, errlen, "chunk %s of stream %zu is damaged "
               "(checksum mismatch)", hex, si);
        return -1;
    }
    return 0;
}

/* Readahead. Chunk files are opened, and the kernel asked to start reading
 * them, READAHEAD chunks ahead of the one being checked: from a cold page
 * cache, mapping one 1 MiB file after another reads each with a synchronous
 * fault (chkpt.load took 1.9x pickle.load's time, whose single file gets the
 * kernel's sequential readahead). The descriptors wait in a ring for
 * place_chunk. A chunk that cannot be opened ahead is opened again by
 * place_chunk, which then says why it cannot. */
#define READAHEAD 16
#define MAP_BATCH 16            /* chunks mapped, then checked, together */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22   /* Linux 5.14 */
#endif

typedef struct {
    int fd[READAHEAD];          /* chunk k's file in slot k % READAHEAD, or -1 */
    uint64_t opened;            /* chunks [0, opened) were opened ahead */
} ahead;

static void
ahead_init(ahead *a)
{
    for (int i = 0; i < READAHEAD; i++) {
        a->fd[i] = -1;
    }
    a->opened = 0;
}

/* Opens the chunks of stream si up to k + READAHEAD (exclusive) and takes
 * chunk k's descriptor out of the ring (-1 if it could not be opened). */
static int
ahead_take(chkpt_snapreader *r, size_t si, ahead *a, uint64_t k)
{
    const rstream *s = &r->streams[si];
    uint64_t end = s->nchunks - k > READAHEAD ? k + READAHEAD : s->nchunks;
    char hex[HEX_LEN + 1], path[PATH_MAX];

    for (; a->opened < end; a->opened++) {
        int fd = -1;
        hex_of(s->data + a->opened * HASH_LEN, hex);
        if (mkpath(path, "%s/%.2s/%s", r->chunks_dir, hex, hex + 2) == 0) {
            fd = open(path, O_RDONLY | O_CLOEXEC);
        }
        if (fd >= 0) {
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
        }
        a->fd[a->opened % READAHEAD] = fd;
    }
    int fd = a->fd[k % READAHEAD];
    a->fd[k % READAHEAD] = -1;
    return fd;
}

static void
ahead_close(ahead *a)
{
    for (int i = 0; i < READAHEAD; i++) {
        if (a->fd[i] >= 0) {
            close(a->fd[i]);
            a->fd[i] = -1;
        }
    }
}

/* Fetches every chunk of chunked stream si, chunk k to dst + k * stride,
 * and checks it. Mapped chunks go in batches: a batch is mapped, its page
 * tables filled in one call (MADV_POPULATE_READ, read-only: nothing is
 * copied; cheaper than the faults of the first reads, 70 against 85 ms for
 * 512 MiB here), then checked. Its data is out of the CPU caches either way.
 * An older kernel refuses the advice, and the first reads fault instead. */
static int
fetch_chunks(chkpt_snapreader *r, size_t si, unsigned char *dst,
             size_t stride, int map, char *err, size_t errlen)
{
    const rstream *s = &r->streams[si];
    uint64_t batch = map ? MAP_BATCH : 1;
    ahead a;
    int rc = 0;

    ahead_init(&a);
    for (uint64_t k0 = 0; k0 < s->nchunks && rc == 0; k0 += batch) {
        uint64_t k1 = s->nchunks - k0 > batch ? k0 + batch : s->nchunks;
        for (uint64_t k = k0; k < k1 && rc == 0; k++) {
            int fd = ahead_take(r, si, &a, k);
            rc = place_chunk(r, si, k, dst + k * stride, map, fd, err, errlen);
        }
        if (rc == 0 && map) {
            uint64_t end = k1 * r->chunk_size < s->len ? k1 * r->chunk_size
                                                        : s->len;
            size_t span = ((size_t)(end - k0 * r->chunk_size) + r->pagesize - 1)
                          & ~(r->pagesize - 1);
            (void)madvise(dst + k0 * stride, span, MADV_POPULATE_READ);
        }
        for (uint64_t k = k0; k < k1 && rc == 0; k++) {
            rc = check_chunk(r, si, k, dst + k * stride, err, errlen);
        }
    }
    ahead_close(&a);
    return rc;
}

static int
check_index(const chkpt_snapreader *r, size_t i, char *err, size_t errlen)
{
    if (i >= r->nstreams) {
        seterr(err, errlen, "stream %zu does not exist (snapshot has %zu)",
               i, r->nstreams);
        return -1;
    }
    return 0;
}

int
chkpt_snap_read_stream(chkpt_snapreader *r, size_t i, void *dst,
                       char *err, size_t errlen)
{
    const rstream *s;

    if (check_index(r, i, err, errlen) < 0) {
        return -1;
    }
    s = &r->streams[i];
    if (s->is_inline) {
        if (s->len > 0) {
            memcpy(dst, s->data, (size_t)s->len);
        }
        return 0;
    }
    return fetch_chunks(r, i, dst, r->chunk_size, 0, err, errlen);
}

int
chkpt_snap_map_stream(chkpt_snapreader *r, size_t i, void **addr,
                      size_t *maplen, char *err, size_t errlen)
{
    const rstream *s;
    unsigned char *base;
    size_t len;

    *addr = NULL;
    *maplen = 0;
    if (check_index(r, i, err, errlen) < 0) {
        return -1;
    }
    s = &r->streams[i];
    if (s->len == 0) {
        return 0;
    }
    len = ((size_t)s->len + r->pagesize - 1) & ~(r->pagesize - 1);
    /* Reserve the whole range; chunk files are then mapped over it. */
    base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        seterr(err, errlen, "cannot map stream %zu (%llu bytes): %s", i,
               (unsigned long long)s->len, errno_text(errno));
        return -1;
    }
    if (s->is_inline) {
        memcpy(base, s->data, (size_t)s->len);
    }
    else {
        if (fetch_chunks(r, i, base, r->chunk_size, 1, err, errlen) < 0) {
            munmap(base, len);
            return -1;
        }
    }
    *addr = base;
    *maplen = len;
    return 0;
}

void
chkpt_unmap(void *addr, size_t maplen)
{
    if (addr != NULL && maplen > 0) {
        munmap(addr, maplen);
    }
}

int
chkpt_snap_verify(chkpt_snapreader *r, char *err, size_t errlen)
{
    for (size_t i = 0; i < r->nstreams; i++) {
        const rstream *s = &r->streams[i];
        if (s->is_inline || s->nchunks == 0) {
            continue;   /* inline bytes are covered by the manifest sum */
        }
        if (r->scratch == NULL) {
            r->scratch = malloc(r->chunk_size);
            if (r->scratch == NULL) {
                seterr(err, errlen, "out of memory");
                return -1;
            }
        }
        if (fetch_chunks(r, i, r->scratch, 0, 0, err, errlen) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Listing, verification of a whole store, owner check                  */

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void
chkpt_free_list(char **paths, size_t n)
{
    if (paths == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(paths[i]);
    }
    free(paths);
}

static int
is_manifest_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".ckpt") == 0;
}

int
chkpt_store_list(const char *dir, char ***paths, size_t *n,
                 char *err, size_t errlen)
{
    char snapdir[PATH_MAX];
    struct stat st;
    struct dirent *de;
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    DIR *d;

    *paths = NULL;
    *n = 0;
    if (stat(dir, &st) < 0) {
        sys_err(err, errlen, "cannot open store", dir);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        seterr(err, errlen, "%s is not a chkpt store (not a directory)", dir);
        return -1;
    }
    if (read_format(dir, err, errlen) < 0) {
        return -1;
    }
    if (mkpath(snapdir, "%s/snapshots", dir) < 0) {
        sys_err(err, errlen, "cannot open store", dir);
        return -1;
    }
    d = opendir(snapdir);
    if (d == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        sys_err(err, errlen, "cannot list", snapdir);
        return -1;
    }
    for (;;) {
        char path[PATH_MAX];
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                sys_err(err, errlen, "cannot list", snapdir);
                goto fail;
            }
            break;
        }
        if (!is_manifest_name(de->d_name)) {
            continue;
        }
        if (mkpath(path, "%s/%s", snapdir, de->d_name) < 0) {
            continue;
        }
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = realloc(v, nc * sizeof(char *));
            if (nv == NULL) {
                goto nomem;
            }
            v = nv;
            cap = nc;
        }
        if ((v[cnt] = strdup(path)) == NULL) {
            goto nomem;
        }
        cnt++;
    }
    closedir(d);
    if (cnt > 0) {
        qsort(v, cnt, sizeof(char *), cmp_str);
    }
    *paths = v;
    *n = cnt;
    return 0;
nomem:
    seterr(err, errlen, "out of memory");
fail:
    closedir(d);
    chkpt_free_list(v, cnt);
    return -1;
}

int
chkpt_store_verify_all(const char *dir, chkpt_verify_cb cb, void *arg,
                       char *err, size_t errlen)
{
    char **paths, msg[CHKPT_ERRLEN];
    size_t n, bad = 0;

    if (chkpt_store_list(dir, &paths, &n, err, errlen) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        chkpt_snapreader *r = chkpt_snap_open(paths[i], msg, sizeof(msg));
        int ok = (r != NULL && chkpt_snap_verify(r, msg, sizeof(msg)) == 0);
        chkpt_snap_close(r);
        if (!ok) {
            if (bad == 0) {
                seterr(err, errlen, "%s: %s", paths[i], msg);
            }
            bad++;
        }
        if (cb != NULL) {
            cb(arg, paths[i], ok ? NULL : msg);
        }
    }
    chkpt_free_list(paths, n);
    if (bad > 1) {
        seterr(err, errlen, "%zu of %zu snapshots in %s are damaged", bad, n,
               dir);
    }
    return bad ? -1 : 0;
}

int
chkpt_store_check_owner(const char *dir, char *err, size_t errlen)
{
    return check_owner(dir, "loading runs pickle, which can run code", err,
                       errlen);
}

/* -1 with a message ending in why when dir (or its snapshots/ or chunks/)
 * is not owned by the effective uid or is writable by group or others. */
static int
check_owner(const char *dir, const char *why, char *err, size_t errlen)
{
    static const char *subs[] = {"", "/snapshots", "/chunks"};
    uid_t me = geteuid();

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char path[PATH_MAX];
        struct stat st;
        if (mkpath(path, "%s%s", dir, subs[i]) < 0) {
            sys_err(err, errlen, "cannot check", dir);
            return -1;
        }
        if (stat(path, &st) < 0) {
            if (errno == ENOENT && i > 0) {
                continue;
            }
            sys_err(err, errlen, "cannot check", path);
            return -1;
        }
        if (st.st_uid != me) {
            seterr(err, errlen, "%s is owned by uid %ld, not by you (uid "
                   "%ld); %s", path, (long)st.st_uid, (long)me, why);
            return -1;
        }
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
            seterr(err, errlen, "%s is writable by %s (mode %03o); %s",
                   path, (st.st_mode & S_IWOTH) ? "others" : "group",
                   (unsigned)(st.st_mode & 0777), why);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Garbage collection                                                   */

typedef struct {
    unsigned char hash[HASH_LEN];
    long newest;        /* index of the newest manifest referencing it */
    uint64_t size;
} chunkref;

static int
cmp_hash(const void *a, const void *b)
{
    return memcmp(a, b, HASH_LEN);
}

static int
cmp_newest(const void *a, const void *b)
{
    long x = ((const chunkref *)a)->newest, y = ((const chunkref *)b)->newest;
    return (x > y) - (x < y);
}

/* References of every manifest in paths[from..n): sorted, unique hashes
 * (with the newest manifest index referencing each) in *refs. A manifest
 * that fails its checksum protects nothing (it cannot be loaded anyway);
 * one that cannot be read or is of a newer format stops the collection. */
static int
collect_refs(char **paths, size_t from, size_t n, chunkref **refs,
             size_t *nrefs, char *err, size_t errlen)
{
    chunkref *v = NULL;
    size_t cnt = 0, cap = 0;

    for (size_t i = from; i < n; i++) {
        char msg[CHKPT_ERRLEN];
        chkpt_snapreader *r = chkpt_snap_open(paths[i], msg, sizeof(msg));
        if (r == NULL) {
            if (strstr(msg, "is damaged") != NULL
                || strstr(msg, "bad magic") != NULL) {
                continue;
            }
            seterr(err, errlen, "not collecting chunks: %s", msg);
            free(v);
            return -1;
        }
        for (size_t si = 0; si < r->nstreams; si++) {
            const rstream *s = &r->streams[si];
            if (s->is_inline) {
                continue;
            }
            for (uint64_t k = 0; k < s->nchunks; k++) {
                if (cnt == cap) {
                    size_t nc = cap ? cap * 2 : 1024;
                    chunkref *nv = realloc(v, nc * sizeof(chunkref));
                    if (nv == NULL) {
                        chkpt_snap_close(r);
                        free(v);
                        seterr(err, errlen, "out of memory");
                        return -1;
                    }
                    v = nv;
                    cap = nc;
                }
                memcpy(v[cnt].hash, s->data + k * HASH_LEN, HASH_LEN);
                v[cnt].newest = (long)i;
                v[cnt].size = 0;
                cnt++;
            }
        }
        chkpt_snap_close(r);
    }
    if (cnt > 0) {
        size_t u = 0;
        /* Stable enough: among equal hashes keep the largest index. */
        qsort(v, cnt, sizeof(chunkref), cmp_hash);
        for (size_t i = 0; i < cnt; i++) {
            if (u > 0 && memcmp(v[u - 1].hash, v[i].hash, HASH_LEN) == 0) {
                if (v[i].newest > v[u - 1].newest) {
                    v[u - 1].newest = v[i].newest;
                }
                continue;
            }
            v[u++] = v[i];
        }
        cnt = u;
    }
    *refs = v;
    *nrefs = cnt;
    return 0;
}

/* Calls fn for every chunk file of the store (path, hash, size). */
typedef int (*chunk_fn)(void *arg, const char *path,
                        const unsigned char *hash, uint64_t size);

static int
walk_chunks(const char *dir, chunk_fn fn, void *arg, char *err,
            size_t errlen)
{
    char cdir[PATH_MAX];
    struct dirent *de;
    DIR *d;

    if (mkpath(cdir, "%s/chunks", dir) < 0) {
        sys_err(err, errlen, "cannot list chunks of", dir);
        return -1;
    }
    d = opendir(cdir);
    if (d == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        sys_err(err, errlen, "cannot list", cdir);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        struct dirent *fe;
        DIR *sd;
        if (strlen(de->d_name) != 2 || unhex(de->d_name[0]) < 0
            || unhex(de->d_name[1]) < 0) {
            continue;
        }
        if (mkpath(sub, "%s/%s", cdir, de->d_name) < 0
            || (sd = opendir(sub)) == NULL) {
            sys_err(err, errlen, "cannot list", sub);
            closedir(d);
            return -1;
        }
        while ((fe = readdir(sd)) != NULL) {
            char hex[HEX_LEN + 1], path[PATH_MAX];
            unsigned char h[HASH_LEN];
            struct stat st;
            if (strlen(fe->d_name) != HEX_LEN - 2) {
                continue;
            }
            memcpy(hex, de->d_name, 2);
            memcpy(hex + 2, fe->d_name, HEX_LEN - 2);
            hex[HEX_LEN] = '\0';
            if (hash_of_hex(hex, h) < 0
                || mkpath(path, "%s/%s", sub, fe->d_name) < 0
                || stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
                continue;
            }
            if (fn(arg, path, h, (uint64_t)st.st_size) < 0) {
                sys_err(err, errlen, "cannot remove", path);
                closedir(sd);
                closedir(d);
                return -1;
            }
        }
        closedir(sd);
    }
    closedir(d);
    return 0;
}

typedef struct {
    chunkref *refs;
    size_t nrefs;
    long first_kept;    /* manifests with a smaller index are removed */
    size_t removed;
    uint64_t total;     /* budget: bytes of chunks, by newest referencer */
} sweep_state;

static chunkref *
find_ref(sweep_state *ss, const unsigned char *h)
{
    if (ss->nrefs == 0) {
        return NULL;    /* bsearch may not be given a NULL array */
    }
    return bsearch(h, ss->refs, ss->nrefs, sizeof(chunkref), cmp_hash);
}

static int
sweep_one(void *arg, const char *path, const unsigned char *h, uint64_t size)
{
    sweep_state *ss = arg;
    chunkref *c = find_ref(ss, h);

    (void)size;
    if (c != NULL && c->newest >= ss->first_kept) {
        return 0;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        return -1;
    }
    ss->removed++;
    return 0;
}

static int
size_one(void *arg, const char *path, const unsigned char *h, uint64_t size)
{
    sweep_state *ss = arg;
    chunkref *c = find_ref(ss, h);

    (void)path;
    if (c != NULL) {
        c->size = size;
    }
    ss->total += size;
    return 0;
}

static void
clear_tmp(const char *dir)
{
    char tdir[PATH_MAX];
    struct dirent *de;
    DIR *d;

    if (mkpath(tdir, "%s/tmp", dir) < 0 || (d = opendir(tdir)) == NULL) {
        return;
    }
    /* Under the exclusive lock no writer is active: all of it is stale. */
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (mkpath(path, "%s/%s", tdir, de->d_name) == 0) {
            unlink(path);
        }
    }
    closedir(d);
}

static uint64_t
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Budget retention: how many of the n oldest manifests to remove for the
 * store to fit max_bytes (never the newest keep_min). Bytes freed by
 * removing the k oldest manifests: the manifests plus every chunk whose
 * newest referencer is among them. Leaves ss->refs sorted by hash. */
static int
budget_nremove(const char *dir, char **paths, size_t n, uint64_t max_bytes,
               long keep_min, sweep_state *ss, size_t *nremove, char *err,
               size_t errlen)
{
    uint64_t total, *msize = calloc(n ? n : 1, sizeof(uint64_t));
    size_t j = 0, maxrm;
    if (msize == NULL) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    if (collect_refs(paths, 0, n, &ss->refs, &ss->nrefs, err, errlen) < 0
        || walk_chunks(dir, size_one, ss, err, errlen) < 0) {
        free(msize);
        return -1;
    }
    total = ss->total;
    for (size_t i = 0; i < n; i++) {
        msize[i] = file_size(paths[i]);
        total += msize[i];
    }
    /* Chunks no manifest references are freed whatever we remove. */
    uint64_t refd = 0;
    for (size_t i = 0; i < ss->nrefs; i++) {
        refd += ss->refs[i].size;
    }
    total -= ss->total - refd;
    qsort(ss->refs, ss->nrefs, sizeof(chunkref), cmp_newest);
    keep_min = keep_min < 0 ? 0 : keep_min;
    maxrm = (size_t)keep_min >= n ? 0 : n - (size_t)keep_min;
    *nremove = 0;
    while (total > max_bytes && *nremove < maxrm) {
        total -= msize[*nremove];
        while (j < ss->nrefs && ss->refs[j].newest <= (long)*nremove) {
            total -= ss->refs[j].size;
            j++;
        }
        (*nremove)++;
    }
    free(msize);
    qsort(ss->refs, ss->nrefs, sizeof(chunkref), cmp_hash);
    return 0;
}

/* Removes the nremove oldest manifests (counted in *removed) and syncs
 * the snapshots directory. */
static int
remove_manifests(const char *dir, char **paths, size_t nremove,
                 size_t *removed, char *err, size_t errlen)
{
    char snapdir[PATH_MAX];
    for (size_t i = 0; i < nremove; i++) {
        if (unlink(paths[i]) < 0 && errno != ENOENT) {
            sys_err(err, errlen, "cannot remove", paths[i]);
            return -1;
        }
        (*removed)++;
    }
    if (nremove > 0) {
        if (mkpath(snapdir, "%s/snapshots", dir) < 0
            || fsync_path(snapdir) < 0) {
            sys_err(err, errlen, "cannot sync snapshots of", dir);
            return -1;
        }
    }
    return 0;
}

/* Moves the pinned manifests after all others, each group keeping its
 * order: the gc below removes a prefix of the list, oldest first, which
 * then holds no pinned one. Returns how many were pinned. */
static size_t
pin_last(char **paths, size_t n, char *const *pinned, size_t npinned)
{
    size_t kept = 0, npin = 0;
    char **pins = npinned ? malloc(n * sizeof(char *)) : NULL;
    if (pins == NULL) {
        return 0;               /* nothing pinned, or no memory: as before */
    }
    for (size_t i = 0; i < n; i++) {
        int pin = 0;
        for (size_t k = 0; k < npinned && !pin; k++) {
            pin = strcmp(paths[i], pinned[k]) == 0;
        }
        if (pin) {
            pins[npin++] = paths[i];
        }
        else {
            paths[kept++] = paths[i];
        }
    }
    memcpy(paths + kept, pins, npin * sizeof(char *));
    free(pins);
    return npin;
}

/* keep >= 0: keep that many newest snapshots. keep < 0: keep as few as
 * needed (but at least keep_min, and every pinned one) for the store to
 * fit max_bytes. */
static int
gc_impl(const char *dir, long keep, uint64_t max_bytes, long keep_min,
        char *const *pinned, size_t npinned,
        size_t *removed_snapshots, size_t *removed_chunks,
        char *err, size_t errlen)
{
    char **paths = NULL;
    size_t n = 0, nremove = 0, removed = 0;
    sweep_state ss = {0};
    int lockfd, rc = -1;

    if (removed_snapshots) {
        *removed_snapshots = 0;
    }
    if (removed_chunks) {
        *removed_chunks = 0;
    }
    switch (read_format(dir, err, errlen)) {
    case -1:
        return -1;
    case 0:
        seterr(err, errlen, "%s is not a chkpt store (no FORMAT file)", dir);
        return -1;
    default:
        break;
    }
    if (check_owner(dir, "gc deletes only from a store of yours", err,
                    errlen) < 0) {
        return -1;
    }
    /* Exclusive: no snapshot is between begin and commit while we decide
       which chunks are garbage. */
    lockfd = lock_store(dir, LOCK_EX, err, errlen);
    if (lockfd < 0) {
        return -1;
    }
    if (chkpt_store_list(dir, &paths, &n, err, errlen) < 0) {
        goto done;
    }
    if (keep >= 0) {
        nremove = (size_t)keep >= n ? 0 : n - (size_t)keep;
        if (collect_refs(paths, nremove, n, &ss.refs, &ss.nrefs, err, errlen) < 0) {
            goto done;
        }
    }
    else {
        keep_min += (long)pin_last(paths, n, pinned, npinned);
        if (budget_nremove(dir, paths, n, max_bytes, keep_min, &ss, &nremove,
                           err, errlen) < 0) {
            goto done;
        }
    }
    /* Manifests first: a crash after this leaves only unreferenced
       chunks, never a manifest without its chunks. */
    if (remove_manifests(dir, paths, nremove, &removed, err, errlen) < 0) {
        goto done;
    }
    ss.first_kept = (long)nremove;
    if (walk_chunks(dir, sweep_one, &ss, err, errlen) < 0) {
        goto done;
    }
    clear_tmp(dir);
    rc = 0;
done:
    if (removed_snapshots) {
        *removed_snapshots = removed;
    }
    if (removed_chunks) {
        *removed_chunks = ss.removed;
    }
    free(ss.refs);
    chkpt_free_list(paths, n);
    unlock_store(lockfd);
    return rc;
}

int
chkpt_store_gc(const char *dir, long keep, size_t *removed_snapshots,
               size_t *removed_chunks, char *err, size_t errlen)
{
    if (keep < 0) {
        seterr(err, errlen, "gc: keep must be >= 0 (got %ld)", keep);
        return -1;
    }
    return gc_impl(dir, keep, 0, 0, NULL, 0, removed_snapshots, removed_chunks,
                   err, errlen);
}

int
chkpt_store_gc_budget(const char *dir, uint64_t max_bytes, long keep_min,
                      char *const *pinned, size_t npinned,
                      size_t *removed_snapshots, size_t *removed_chunks,
                      char *err, size_t errlen)
{
    return gc_impl(dir, -1, max_bytes, keep_min, pinned, npinned,
                   removed_snapshots, removed_chunks, err, errlen);
}
