/* authjob SIDEFILE DELAY_MS HOLD_MS: a job that prints ordinary lines, starts a
 * grandchild (sleep) in its process group, waits DELAY_MS, notes the
 * CLOCK_MONOTONIC time and prints an auth-failure line, then holds for
 * HOLD_MS (0 = until killed). SIDEFILE gets "pid <pid>" at start and
 * "t <ns>" right before the auth line is written. */
#include <fcntl.h>
#include <signal.h>
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

static void msleep(long ms) {
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0) {}
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: authjob SIDEFILE DELAY_MS HOLD_MS\n"); return 2; }
    int side = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (side < 0) return 1;
    dprintf(side, "pid %d\n", (int)getpid());
    if (fork() == 0) {
        execl("/bin/sleep", "sleep", "1000", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) printf("working: step %d ok\n", i);
    fflush(stdout);
    msleep(atol(argv[2]));
    long long t = now();
    const char *line = "Error: HTTP 401: unauthorized (OAuth token expired)\n";
    dprintf(side, "t %lld\n", t);
    if (write(1, line, strlen(line)) < 0) return 1;
    long hold = atol(argv[3]);
    if (hold > 0) { msleep(hold); return 0; }
    for (;;) pause();
}
