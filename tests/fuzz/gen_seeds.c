/* gen_seeds.c: writes a seed corpus for fuzz_manifest from valid snapshots
 * made with the store API: "\4k" + the manifest of reference k, "\k" + the
 * chunk of reference k-1. Usage: gen_seeds OUTDIR */
#include "fuzz_refs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static int
copy_with_prefix(const char *src, unsigned char prefix, const char *dst)
{
    unsigned char buf[65536];
    ssize_t n;
    int in = open(src, O_RDONLY), out;

    if (in < 0) {
        return -1;
    }
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || write(out, &prefix, 1) != 1) {
        close(in);
        return -1;
    }
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            close(in);
            close(out);
            return -1;
        }
    }
    close(in);
    close(out);
    return n < 0 ? -1 : 0;
}

int
main(int argc, char **argv)
{
    char base[PATH_MAX], dst[PATH_MAX];
    fuzz_ref refs[NREFS];

    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds OUTDIR\n");
        return 2;
    }
    strcpy(base, "work-XXXXXX");     /* removed by `make run` */
    if (mkdtemp(base) == NULL || fuzz_make_refs(base, refs) < 0) {
        return 1;
    }
    for (int k = 0; k < NREFS; k++) {
        snprintf(dst, sizeof(dst), "%s/manifest%d", argv[1], k);
        if (copy_with_prefix(refs[k].manifest, (unsigned char)(4 * k), dst)
            < 0) {
            return 1;
        }
        snprintf(dst, sizeof(dst), "%s/chunk%d", argv[1], k);
        if (copy_with_prefix(refs[k].chunk, (unsigned char)(k + 1), dst) < 0) {
            return 1;
        }
    }
    printf("seeds written to %s (store copies in %s)\n", argv[1], base);
    return 0;
}
