/* timeit: runs a command COUNT times and prints "NAME MS" per run (wall
 * clock from fork to exit), the way a user or a script would run it.
 *
 *   timeit NAME START COUNT CMD [ARG]...
 *
 * In the arguments, %i becomes START + k (k = 0 .. COUNT-1) and %p
 * becomes START + k - 1.  The command's stdout goes to /dev/null; a run
 * that exits non-zero stops everything (exit 1).  Compiled with
 * -Wall -Wextra -Werror by the Makefile's bench rules. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static char *
subst(const char *s, long i)
{
    size_t n = strlen(s);
    char *out = malloc(n * 8 + 64), *o = out;
    while (*s) {
        if (s[0] == '%' && (s[1] == 'i' || s[1] == 'p')) {
            o += sprintf(o, "%ld", s[1] == 'i' ? i : i - 1);
            s += 2;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
    return out;
}

int
main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: timeit NAME START COUNT CMD [ARG]...\n");
        return 2;
    }
    long start = atol(argv[2]), count = atol(argv[3]);
    int nargs = argc - 4;
    char **args = calloc((size_t) nargs + 1, sizeof *args);
    for (long k = 0; k < count; k++) {
        for (int a = 0; a < nargs; a++) {
            free(args[a]);
            args[a] = subst(argv[4 + a], start + k);
        }
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid < 0) {
            perror("timeit: fork");
            return 1;
        }
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0)
                dup2(null, STDOUT_FILENO);
            execvp(args[0], args);
            perror(args[0]);
            _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
            ;
        double t1 = now_ms();
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "timeit: %s failed (status %d)\n", args[0], st);
            return 1;
        }
        printf("%s %.3f\n", argv[1], t1 - t0);
        fflush(stdout);
    }
    for (int a = 0; a < nargs; a++)
        free(args[a]);
    free(args);
    return 0;
}
