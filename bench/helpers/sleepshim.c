/* sleep shim for the seed's idle path: `sleep 2` returns at once (it is still
 * spawned, as BASELINE measured); anything else runs the real sleep. */
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "2") == 0) return 0;
    argv[0] = "sleep";
    execv("/bin/sleep", argv);
    return 127;
}
