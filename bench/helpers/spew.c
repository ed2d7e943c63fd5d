/* spew BYTES [CHUNK]: write BYTES of ordinary text lines (no auth pattern) to
 * stdout as fast as possible, in CHUNK-byte writes (default 65536; at most
 * 65536). Suffixes K, M, G (binary) allowed in BYTES. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) { fprintf(stderr, "usage: spew BYTES [CHUNK]\n"); return 2; }
    char *end;
    unsigned long long total = strtoull(argv[1], &end, 10);
    if (*end == 'K') total <<= 10; else if (*end == 'M') total <<= 20; else if (*end == 'G') total <<= 30;
    static char buf[65536];
    size_t chunk = argc == 3 ? (size_t)atol(argv[2]) : sizeof buf;
    if (chunk == 0 || chunk > sizeof buf) chunk = sizeof buf;
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
        size_t n = total < chunk ? (size_t)total : chunk;
        ssize_t w = write(1, buf, n);
        if (w < 0) { if (errno == EINTR) continue; perror("spew: write"); return 1; }
        total -= (unsigned long long)w;
    }
    return 0;
}
