/* store.h: the on-disk snapshot store (content-addressed chunks + manifests).
 *
 * Pure C with no Python calls and no global state, so that a forked child
 * (the future background writer) can use it without touching the interpreter.
 * Every function reports failure by returning -1 (or NULL) and writing a
 * one-line, human-readable reason into err[errlen]; nothing is printed.
 *
 * Thread safety: distinct objects may be used from distinct threads (or a
 * forked child) at once; one object must not be used by two threads at once.
 *
 * Layout of a store directory (see docs/FORMAT.md for the byte format):
 *   DIR/FORMAT                       "chkpt-store <version>\n"
 *   DIR/snapshots/<id>.ckpt          one manifest per snapshot, published atomically
 *   DIR/chunks/XX/YYYY...          content-addressed chunks (XXH3-128 of raw data)
 *   DIR/tmp/                         files being written; never read
 *   DIR/lock                         flock: writers shared, gc exclusive
 */
#ifndef CHKPT_STORE_H
#define CHKPT_STORE_H

#include <stddef.h>
#include <stdint.h>

#define CHKPT_STORE_VERSION 1
#define CHKPT_CHUNK_SIZE (1u << 20)     /* streams are cut into 1 MiB chunks */
#define CHKPT_ERRLEN 512

typedef struct chkpt_store chkpt_store;
typedef struct chkpt_snapwriter chkpt_snapwriter;
typedef struct chkpt_snapreader chkpt_snapreader;

/* Flags for chkpt_snap_add_stream. */
#define CHKPT_STREAM_SHARED 1   /* always store as chunks (never inline), so it is
                                   shared between snapshots: script sources */

/* Open (and with create != 0, create with 0700 dirs) the store at dir.
 * A store whose FORMAT is newer than CHKPT_STORE_VERSION is refused. */
int chkpt_store_open(const char *dir, int create, chkpt_store **out,
                     char *err, size_t errlen);
void chkpt_store_close(chkpt_store *s);
const char *chkpt_store_dir(const chkpt_store *s);

/* Building a snapshot. Streams are numbered 0, 1, ... in the order added.
 * Data is hashed and chunked; chunks already in the store are not written
 * again. compress_level: 0 = none, >0 = zstd level (a chunk stays raw when
 * compression does not make it smaller). Streams shorter than 4 KiB are
 * kept inline in the manifest unless CHKPT_STREAM_SHARED. begin takes a
 * shared flock on DIR/lock (blocking while gc runs), released by commit or
 * abort. After an add_stream failure the writer can only be aborted
 * (commit fails); chunks it already stored stay as unreferenced garbage for
 * gc (they may be shared with a concurrent writer, so they are not undone).
 * The writer's lock lives on an open file description: if the process forks
 * between begin and commit, exactly one of the two processes may go on with
 * the writer (commit/abort release the lock for both). */
chkpt_snapwriter *chkpt_snap_begin(chkpt_store *s, int compress_level,
                                   char *err, size_t errlen);
/* Returns the stream index, or -1. */
long chkpt_snap_add_stream(chkpt_snapwriter *w, const void *data, size_t len,
                           int flags, char *err, size_t errlen);
/* Writes the manifest atomically (temp, fsync, rename, fsync dir) with meta
 * (opaque bytes: JSON made by the caller). On success the manifest path is
 * copied into path_out and the writer is freed. On failure nothing becomes
 * visible and the writer is freed too. */
int chkpt_snap_commit(chkpt_snapwriter *w, const void *meta, size_t meta_len,
                      char *path_out, size_t path_len, char *err, size_t errlen);
void chkpt_snap_abort(chkpt_snapwriter *w);
/* Bytes newly written to the store by this writer so far. */
uint64_t chkpt_snap_bytes_written(const chkpt_snapwriter *w);

/* Reading. Opening verifies the manifest's checksum and format version and
 * bounds-checks the whole manifest (safe on arbitrary bytes). The store is
 * dirname(dirname(manifest_path)), so a moved or copied store still works.
 * Readers take no lock. Errors name what is damaged, e.g.
 * "chunk <hex> of stream 2 is damaged (checksum mismatch)". */
chkpt_snapreader *chkpt_snap_open(const char *manifest_path,
                                  char *err, size_t errlen);
void chkpt_snap_close(chkpt_snapreader *r);
const char *chkpt_snap_meta(const chkpt_snapreader *r, size_t *len);
size_t chkpt_snap_nstreams(const chkpt_snapreader *r);
uint64_t chkpt_snap_stream_len(const chkpt_snapreader *r, size_t i);
/* Copies stream i into dst (stream_len bytes), verifying every chunk. */
int chkpt_snap_read_stream(chkpt_snapreader *r, size_t i, void *dst,
                           char *err, size_t errlen);
/* Maps stream i privately and writable (copy-on-write, never written back),
 * verifying every chunk. addr and maplen are for chkpt_unmap. A zero-length
 * stream gives *addr == NULL. */
int chkpt_snap_map_stream(chkpt_snapreader *r, size_t i, void **addr,
                          size_t *maplen, char *err, size_t errlen);
void chkpt_unmap(void *addr, size_t maplen);
/* Checks that every chunk of every stream is present and intact. */
int chkpt_snap_verify(chkpt_snapreader *r, char *err, size_t errlen);

/* Manifest paths of the store, oldest first (by name). Caller frees with
 * chkpt_free_list. A store dir without snapshots gives n == 0. */
int chkpt_store_list(const char *dir, char ***paths, size_t *n,
                     char *err, size_t errlen);
void chkpt_free_list(char **paths, size_t n);

/* Keep the newest keep snapshots, delete older manifests, then delete chunks
 * no remaining manifest references. Safe against concurrent writers (lock).
 * Reports what was removed through the counters (may be NULL).
 * Also removes stale files in DIR/tmp. A kept manifest that fails its
 * checksum protects no chunk (it cannot be loaded anyway); one that cannot
 * be read (I/O error, newer format) makes gc fail without deleting chunks.
 * Blocks while a snapshot is being written (exclusive flock on DIR/lock). */
int chkpt_store_gc(const char *dir, long keep, size_t *removed_snapshots,
                   size_t *removed_chunks, char *err, size_t errlen);

/* Added. Size-budget retention: delete the oldest snapshots (never the
 * newest keep_min, never one whose manifest path is among the npinned
 * paths of pinned) until manifests + chunks take at most max_bytes, then
 * collect chunks as chkpt_store_gc does. Dedup is accounted for: a chunk
 * counts as freed only when its last referencing manifest goes. */
int chkpt_store_gc_budget(const char *dir, uint64_t max_bytes, long keep_min,
                          char *const *pinned, size_t npinned,
                          size_t *removed_snapshots, size_t *removed_chunks,
                          char *err, size_t errlen);

/* Added. Verifies every snapshot of the store (manifest + all chunks).
 * cb (may be NULL) is called once per snapshot, oldest first, with
 * problem == NULL when it is intact, else a one-line reason. Returns 0 when
 * all are intact; -1 when the store cannot be listed or any snapshot is
 * damaged (err then says which, or how many). Per-snapshot verification
 * stays available as chkpt_snap_open + chkpt_snap_verify. */
typedef void (*chkpt_verify_cb)(void *arg, const char *path,
                                const char *problem);
int chkpt_store_verify_all(const char *dir, chkpt_verify_cb cb, void *arg,
                           char *err, size_t errlen);

/* Added. Loading runs pickle, which can run code: -1 with a clear message
 * when DIR, DIR/snapshots or DIR/chunks is not owned by the effective uid
 * or is writable by group or others. Missing subdirectories are fine.
 * chkpt_store_open(create=1) and gc refuse such a store the same way
 * (ls, show and verify read it: they never unpickle). */
int chkpt_store_check_owner(const char *dir, char *err, size_t errlen);

#ifdef CHKPT_FUZZING
/* Fuzz build only: 0 (the default) ignores the manifest, trailer and
 * compressed-data checksums, non-zero checks them as the real build does. */
extern int chkpt_fuzz_check_sums;
#endif

#endif
