/* store.h: the on-disk snapshot store (content-addressed chunks + manifests).
 *
 * Pure C with no Python calls and no global state, so that a forked child
 * (the future background writer) can use it without touching the interpreter.
 * Every function reports failure by returning -1 (or NULL) and writing a
 * one-line, human-readable reason into err[errlen]; nothing is printed.
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

/* Open (and with create != 0, create with 0700 dirs) the store at dir. */
int chkpt_store_open(const char *dir, int create, chkpt_store **out,
                     char *err, size_t errlen);
void chkpt_store_close(chkpt_store *s);
const char *chkpt_store_dir(const chkpt_store *s);

/* Building a snapshot. Streams are numbered 0, 1, ... in the order added.
 * Data is hashed and chunked; chunks already in the store are not written
 * again. compress_level: 0 = none, >0 = zstd level. */
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

/* Reading. Opening verifies the manifest's checksum and format version. */
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
 * Reports what was removed through the counters (may be NULL). */
int chkpt_store_gc(const char *dir, long keep, size_t *removed_snapshots,
                   size_t *removed_chunks, char *err, size_t errlen);

#endif
