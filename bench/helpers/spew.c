/* spew BYTES: write BYTES of ordinary text lines (no auth pattern) to stdout
 * as fast as possible, in 64 KiB writes. Suffixes K, M, G (binary) allowed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: spew BYTES\n"); return 2; }
    char *end;
    unsigned long long total = strtoull(argv[1], &end, 10);
    if (*end == 'K') total <<= 10; else if (*end == 'M') total <<= 20; else if (*end == 'G') total <<= 30;
    static char buf[65536];
    size_t used = 0;
    unsigned long line = 0;
    while (used < sizeof buf) {
        char tmp[160];
        int n = snprintf(tmp, sizeof tmp,
            "%08lu 2026-11-25T20:00:00Z agent: step done, tokens=1234 tool=Read path=src/lib.rs status=ok\n", line++);
        size_t take = (size_t)n < sizeof buf - used ? (size_t)n : sizeof buf - used;
        memcpy(buf + used, tmp, take);
        used += take;
    }
    buf[sizeof buf - 1] = '\n';
    while (total > 0) {
        size_t n = total < sizeof buf ? (size_t)total : sizeof buf;
        ssize_t w = write(1, buf, n);
        if (w < 0) { if (errno == EINTR) continue; perror("spew: write"); return 1; }
        total -= (unsigned long long)w;
    }
    return 0;
}
