/* tstamp: a job that appends "S <ns>" when it starts and "E <ns>" just before
 * it exits (CLOCK_MONOTONIC) to the file named by $TSTAMP_FILE, then exits 0.
 * Arguments are ignored (the seed's fake tsx passes a .ts path). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void) {
    long long start = now();
    const char *path = getenv("TSTAMP_FILE");
    if (!path) return 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    char line[64];
    int n = snprintf(line, sizeof line, "S %lld\n", start);
    if (write(fd, line, n) != n) return 1;
    n = snprintf(line, sizeof line, "E %lld\n", now());
    if (write(fd, line, n) != n) return 1;
    return 0; /* exit follows at once; fd is closed by the kernel */
}
