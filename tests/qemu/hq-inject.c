/* The failure injector in the harness: tests/tools/qmp-inject between the
 * agent and QEMU.  The test monitor still talks to QEMU directly, so a
 * test sees what QEMU really holds whatever the agent was told. */
#include "tests/qemu/harness.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *
inject_path(struct hq_vm *vm, const char *leaf)
{
    return xasprintf("%s/inject.%s", vm->dir, leaf);
}

int
hq_inject_start(struct hq_vm *vm)
{
    const char *b = getenv("BUILD");
    CLEANUP_FREE char *bin = xasprintf("%s/qmp-inject", b && *b ? b : "build");
    CLEANUP_FREE char *rules = inject_path(vm, "rules");
    CLEANUP_FREE char *log = inject_path(vm, "log");
    CLEANUP_FREE char *out = inject_path(vm, "out");
    free(vm->agent_qmp);
    vm->agent_qmp = inject_path(vm, "sock");
    char *argv[] = { bin, vm->agent_qmp, vm->qmp_sock, rules, log, NULL };
    vm->inject_pid = hq_spawn(argv, out);
    if (vm->inject_pid < 0) {
        vm->inject_pid = 0;
        return -1;
    }
    for (double end = hq_now() + 10; !hq_sock_listening(vm->agent_qmp);) {
        if (hq_now() > end) {
            hq_fail("qmp-inject did not listen on %s", vm->agent_qmp);
            return -1;
        }
        hq_sleep_ms(10);
    }
    return 0;
}

void
hq_inject_stop(struct hq_vm *vm)
{
    if (vm->inject_pid <= 0)
        return;
    kill(vm->inject_pid, SIGKILL);
    waitpid(vm->inject_pid, NULL, 0);
    vm->inject_pid = 0;
}

int
hq_inject_rules(struct hq_vm *vm, const char *fmt, ...)
{
    CLEANUP_FREE char *path = inject_path(vm, "rules");
    CLEANUP_FREE char *tmp = inject_path(vm, "rules.tmp");
    va_list ap;
    va_start(ap, fmt);
    FILE *f = fopen(tmp, "w");
    if (f) {
        vfprintf(f, fmt, ap);
        /* A unique trailer makes every write a change, so the proxy
         * starts counting again even when the rules are the same. */
        static long generation;
        fprintf(f, "\n# %ld\n", ++generation);
    }
    va_end(ap);
    if (!f || fclose(f) != 0 || rename(tmp, path) < 0) {
        hq_fail("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static long
log_lines(struct hq_vm *vm, json_t *names)
{
    CLEANUP_FREE char *path = inject_path(vm, "log");
    CLEANUP_FREE char *text = hq_read_file(path);
    CLEANUP_FREE char *mark_path = inject_path(vm, "mark");
    CLEANUP_FREE char *mark_text = hq_read_file(mark_path);
    long mark = mark_text ? atol(mark_text) : 0, n = 0;
    for (char *line = text, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            break;
        *nl = '\0';
        char name[128];
        if (sscanf(line, "%ld %127s", &n, name) == 2 && n > mark && names)
            json_array_append_new(names, json_string(name));
    }
    return n;
}

json_t *
hq_inject_seen(struct hq_vm *vm)
{
    json_t *names = json_array();
    log_lines(vm, names);
    return names;
}

void
hq_inject_mark(struct hq_vm *vm)
{
    CLEANUP_FREE char *path = inject_path(vm, "mark");
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%ld\n", log_lines(vm, NULL));
        fclose(f);
    }
}
