/* fuzz_refs.h: reference snapshots shared by the fuzz target and the seed
 * generator. Each reference is a store of its own holding one snapshot with
 * exactly one chunk, so "the chunk of reference k" is unambiguous:
 *   0: 100 bytes, shared (raw chunk, read by pread only)
 *   1: 8292 bytes (raw chunk: two pages mapped in place, the tail read)
 *   2: 1 MiB of a pattern, zstd level 3 (compressed chunk)
 */
#ifndef FUZZ_REFS_H
#define FUZZ_REFS_H

#include "store.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NREFS 3

typedef struct {
    char manifest[PATH_MAX];
    char chunk[PATH_MAX];
} fuzz_ref;

/* The only chunk file of the store at dir. */
static int
fuzz_find_chunk(const char *dir, char *out)
{
    char cdir[PATH_MAX];
    struct dirent *de;
    DIR *d;
    int found = -1;

    snprintf(cdir, sizeof(cdir), "%s/chunks", dir);
    d = opendir(cdir);
    while (d != NULL && found < 0 && (de = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        struct dirent *fe;
        DIR *sd;
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(sub, sizeof(sub), "%s/%s", cdir, de->d_name);
        sd = opendir(sub);
        while (sd != NULL && (fe = readdir(sd)) != NULL) {
            if (fe->d_name[0] != '.') {
                snprintf(out, PATH_MAX, "%s/%s", sub, fe->d_name);
                found = 0;
                break;
            }
        }
        if (sd != NULL) {
            closedir(sd);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return found;
}

/* What reference k's snapshot holds: stream 0 is FUZZ_INLINE (small enough
 * to be inline in the manifest), stream 1 fuzz_ref_len(k) bytes made by
 * fuzz_ref_fill, and the meta is FUZZ_META. */
#define FUZZ_INLINE "tiny inline"
#define FUZZ_META "{\"ref\": 1}"

static size_t
fuzz_ref_len(int k)
{
    /* Reference 1 is two pages and a bit: whole pages mapped, tail read;
       small enough for libFuzzer's input size limit. */
    static const size_t lens[NREFS] = {100, 8192 + 100, CHKPT_CHUNK_SIZE};
    return lens[k];
}

static void
fuzz_ref_fill(int k, unsigned char *data)
{
    for (size_t i = 0; i < fuzz_ref_len(k); i++) {
        data[i] = (unsigned char)(k == 2 ? i % 7 : (i * 2654435761u) >> 11);
    }
}

/* Creates the references under base (an existing directory). */
static int
fuzz_make_refs(const char *base, fuzz_ref *refs)
{
    static const int levels[NREFS] = {0, 0, 3};
    char err[CHKPT_ERRLEN];

    for (int k = 0; k < NREFS; k++) {
        char dir[PATH_MAX];
        size_t len = fuzz_ref_len(k);
        unsigned char *data = malloc(len);
        chkpt_store *s;
        chkpt_snapwriter *w;

        if (data == NULL) {
            return -1;
        }
        fuzz_ref_fill(k, data);
        snprintf(dir, sizeof(dir), "%s/ref%d", base, k);
        if (chkpt_store_open(dir, 1, &s, err, sizeof(err)) < 0
            || (w = chkpt_snap_begin(s, levels[k], err, sizeof(err))) == NULL
            || chkpt_snap_add_stream(w, FUZZ_INLINE, strlen(FUZZ_INLINE), 0,
                                     err, sizeof(err)) < 0
            || chkpt_snap_add_stream(w, data, len, CHKPT_STREAM_SHARED,
                                     err, sizeof(err)) < 0
            || chkpt_snap_commit(w, FUZZ_META, strlen(FUZZ_META),
                                 refs[k].manifest, PATH_MAX, err,
                                 sizeof(err)) < 0
            || fuzz_find_chunk(dir, refs[k].chunk) < 0) {
            fprintf(stderr, "fuzz_make_refs: %s\n", err);
            free(data);
            return -1;
        }
        chkpt_store_close(s);
        free(data);
    }
    return 0;
}

#endif
