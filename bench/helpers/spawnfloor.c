/* spawnfloor N PROG [ARGS...]: posix_spawn + waitpid PROG N times and print
 * "cpu_ms_per_spawn wall_ms_per_spawn" (CPU = parent + children, user+sys).
 * The physical floor of one iteration of any supervisor. */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double tv(struct timeval t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: spawnfloor N PROG [ARGS...]\n"); return 2; }
    long n = atol(argv[1]);
    struct timespec a, b;
    struct rusage s0, c0, s1, c1;
    getrusage(RUSAGE_SELF, &s0);
    getrusage(RUSAGE_CHILDREN, &c0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, argv[2], NULL, NULL, argv + 2, environ) != 0) { perror("posix_spawn"); return 1; }
        if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    getrusage(RUSAGE_SELF, &s1);
    getrusage(RUSAGE_CHILDREN, &c1);
    double cpu = tv(s1.ru_utime) - tv(s0.ru_utime) + tv(s1.ru_stime) - tv(s0.ru_stime)
               + tv(c1.ru_utime) - tv(c0.ru_utime) + tv(c1.ru_stime) - tv(c0.ru_stime);
    double wall = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    printf("%.4f %.4f\n", cpu / n, wall / n);
    return 0;
}
