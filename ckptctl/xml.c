/* ckptctl libvirt XML commands: checkpoint redefine (and its alias adopt),
 * checkpoint export-xml, and the XML file arguments that checkpoint create,
 * backup begin and backup info take.  The XML itself is the agent's (and
 * metadata/xml.c's, used here only to split an exported list per file). */
#include "ckptctl/ckptctl.h"
#include "metadata/xml.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Long-only options; values above any character getopt may return. */
enum {
    OPT_XML = 256, OPT_OUTPUT, OPT_RELEASE, OPT_DOMAIN,
};

/* --- files --- */

/* The whole of fd, at most META_XML_MAX_BYTES; NULL with errno set, or
 * EFBIG when it is larger. */
static char *
ctl_slurp(int fd, size_t *len)
{
    size_t cap = 64 * 1024, n = 0;
    char *buf = xmalloc(cap + 1);

    for (;;) {
        ssize_t r;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t) r;
        if (n > META_XML_MAX_BYTES) {
            free(buf);
            errno = EFBIG;
            return NULL;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int
ctl_xml_file_arg(const struct ctl_ctx *ctx, json_t *args, const char *key,
                 const char *path)
{
    bool std_in = strcmp(path, "-") == 0;
    int fd = std_in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    CLEANUP_FREE char *text = NULL;
    size_t len = 0;
    struct stat st;

    if (fd < 0)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (!std_in)
            close(fd);
        return ctl_fail(CTL_EXIT_LOCAL, "cannot read %s: %s", path, strerror(EISDIR));
    }
    text = ctl_slurp(fd, &len);
    if (!text) {
        int e = errno;
        if (!std_in)
            close(fd);
        if (e == EFBIG)
            return ctl_usage_error(ctx, "%s is larger than %u MiB, the most the"
                                   " agent reads", std_in ? "standard input" : path,
                                   META_XML_MAX_BYTES >> 20);
        return ctl_fail(CTL_EXIT_LOCAL, "cannot read %s: %s", path, strerror(e));
    }
    if (!std_in)
        close(fd);
    if (memchr(text, '\0', len))
        return ctl_usage_error(ctx, "%s holds a NUL byte: not an XML document",
                               std_in ? "standard input" : path);
    if (len == 0)
        return ctl_usage_error(ctx, "%s is empty", std_in ? "standard input" : path);
    json_t *s = json_stringn(text, len);
    if (!s)
        return ctl_usage_error(ctx, "%s is not UTF-8 (the agent takes XML in"
                               " UTF-8 only)", std_in ? "standard input" : path);
    json_object_set_new(args, key, s);
    return CTL_EXIT_OK;
}

int
ctl_print_xml_reply(const char *command, json_t *ret, const void *opaque)
{
    const char *xml;
    json_error_t err;

    if (json_unpack_ex(ret, &err, 0, "{s:s}", "xml", &xml) < 0)
        return ctl_bad_reply(command, err.text);
    fputs(xml, stdout);
    if (!*xml || xml[strlen(xml) - 1] != '\n')
        putchar('\n');
    return CTL_EXIT_OK;
}

/* --- redefine, adopt --- */

static int
ctl_print_redefined(const char *command, json_t *ret, const void *opaque)
{
    const char *verb = opaque;
    size_t i;
    json_t *c;

    if (!json_is_array(ret))
        return ctl_bad_reply(command, "not a list");
    json_array_foreach(ret, i, c)
        if (!json_is_string(json_object_get(c, "name")))
            return ctl_bad_reply(command, "a checkpoint without a name");
    json_array_foreach(ret, i, c) {
        const char *parent = json_string_value(json_object_get(c, "parent"));
        printf("checkpoint %s %s", json_string_value(json_object_get(c, "name")), verb);
        if (parent)
            printf(" (parent %s)", parent);
        putchar('\n');
    }
    return CTL_EXIT_OK;
}

/* checkpoint redefine FILE | --xml FILE; checkpoint adopt --xml FILE | FILE. */
int
ctl_cmd_checkpoint_redefine(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "xml", required_argument, NULL, OPT_XML }, CTL_OPT_HELP, { 0 }
    };
    bool adopt = strcmp(argv[0], "adopt") == 0;
    const char *file = NULL;
    CLEANUP_JSON json_t *args = json_object();
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if (c != OPT_XML)
            return CTL_EXIT_USAGE;
        if (file)
            return ctl_usage_error(ctx, "one XML file only (a <checkpoints> list"
                                   " holds several checkpoints)");
        file = optarg;
    }
    if ((r = ctl_operands(ctx, argc, argv, file ? 0 : 1, file ? 0 : 1)) != CTL_EXIT_OK)
        return r;
    if (!file)
        file = argv[optind];
    if ((r = ctl_xml_file_arg(ctx, args, "xml", file)) != CTL_EXIT_OK)
        return r;
    return ctl_call_print(ctx, "checkpoint-redefine", json_incref(args),
                          ctl_print_redefined, adopt ? "adopted" : "redefined");
}

/* --- export-xml --- */

/* Whether s needs quoting for a POSIX shell. */
static bool
ctl_shell_plain(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_-./:=@%+,", *s))
            return false;
    return true;
}

static void
ctl_print_shell_word(const char *s)
{
    if (ctl_shell_plain(s)) {
        fputs(s, stdout);
        return;
    }
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", stdout);
        else
            putchar(*s);
    }
    putchar('\'');
}

/* The checkpoints of an export reply, parsed; -1 after an error message. */
static int
ctl_export_parse(json_t *ret, const char **xml, struct meta_xml_ckpt **list,
                 size_t *n)
{
    json_error_t err;
    struct ckpt_error e = { 0 };

    if (json_unpack_ex(ret, &err, 0, "{s:s}", "xml", xml) < 0)
        return ctl_bad_reply("checkpoint-export", err.text);
    if (meta_xml_parse_checkpoints(*xml, strlen(*xml), list, n, &e) < 0)
        return ctl_bad_reply("checkpoint-export", e.msg);
    for (size_t i = 0; i < *n; i++)
        if (!(*list)[i].name) {
            meta_xml_ckpts_free(*list, *n);
            *list = NULL;
            return ctl_bad_reply("checkpoint-export", "a checkpoint without a name");
        }
    return CTL_EXIT_OK;
}

static char *
ctl_export_path(const char *dir, const char *name)
{
    size_t len = strlen(dir);
    return xasprintf("%s%s%s.xml", dir, len && dir[len - 1] == '/' ? "" : "/", name);
}

/* Before anything changes: DIR exists (made 0700 if missing) and none of
 * the files the export would write is there. */
static int
ctl_export_precheck(const char *dir, const struct meta_xml_ckpt *list, size_t n)
{
    struct stat st;
    int r = ctl_make_dirs(dir, true);

    if (r != CTL_EXIT_OK)
        return r;
    for (size_t i = 0; i < n; i++) {
        CLEANUP_FREE char *path = ctl_export_path(dir, list[i].name);
        if (lstat(path, &st) == 0)
            return ctl_fail(CTL_EXIT_EXISTS, "%s exists; it is never overwritten",
                            path);
    }
    return CTL_EXIT_OK;
}

static int
ctl_write_new_file(const char *path, const char *text)
{
    size_t len = strlen(text), done = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

    if (fd < 0)
        return -1;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(path);
            errno = e;
            return -1;
        }
        done += (size_t) w;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        int e = errno;
        unlink(path);
        errno = e;
        return -1;
    }
    return 0;
}

/* Writes DIR/NAME.xml per checkpoint, then prints the virsh commands.  If a
 * file cannot be written after a release, the list goes to stdout so the
 * metadata is not lost. */
static int
ctl_export_write(const char *dir, const char *domain, bool released,
                 const char *xml, const struct meta_xml_ckpt *list, size_t n,
                 bool commands)
{
    for (size_t i = 0; i < n; i++) {
        CLEANUP_FREE char *path = ctl_export_path(dir, list[i].name);
        CLEANUP_FREE char *one = meta_xml_format_checkpoint(&list[i]);

        if (ctl_write_new_file(path, one) < 0) {
            int r = ctl_fail(errno == EEXIST ? CTL_EXIT_EXISTS : CTL_EXIT_LOCAL,
                             "cannot write %s: %s", path, strerror(errno));
            if (released) {
                ctl_note("the checkpoints were released; their XML follows"
                         " on stdout");
                fputs(xml, stdout);
            }
            return r;
        }
    }
    for (size_t i = 0; commands && i < n; i++) {
        CLEANUP_FREE char *path = ctl_export_path(dir, list[i].name);
        fputs("virsh checkpoint-create ", stdout);
        ctl_print_shell_word(domain);
        putchar(' ');
        ctl_print_shell_word(path);
        puts(" --redefine");
    }
    if (n == 0)
        ctl_note("no checkpoints to export");
    return CTL_EXIT_OK;
}

static int
ctl_export_to_dir(struct ctl_ctx *ctx, const char *dir, bool release,
                  const char *domain)
{
    CLEANUP_JSON json_t *before = NULL, *ret = NULL;
    struct meta_xml_ckpt *list = NULL;
    size_t n = 0;
    const char *xml;
    int r;

    /* First without release: learn the names and check the files, so that
     * nothing is released when they cannot be written. */
    if ((r = ctl_call(ctx, "checkpoint-export", json_object(), &before)) != CTL_EXIT_OK ||
        (r = ctl_export_parse(before, &xml, &list, &n)) != CTL_EXIT_OK)
        return r;
    r = ctl_export_precheck(dir, list, n);
    meta_xml_ckpts_free(list, n);
    list = NULL;
    if (r != CTL_EXIT_OK)
        return r;
    if (release) {
        r = ctl_call(ctx, "checkpoint-export",
                     json_pack("{s:b}", "release", 1), &ret);
        if (r != CTL_EXIT_OK)
            return r;
    } else {
        ret = json_incref(before);
    }
    if ((r = ctl_export_parse(ret, &xml, &list, &n)) != CTL_EXIT_OK) {
        if (release)        /* released, but unreadable: keep the text */
            ctl_print_json(ret, JSON_COMPACT);
        return r;
    }
    /* --json: the files are written all the same; stdout gets the reply. */
    r = ctl_export_write(dir, domain, release, xml, list, n, !ctx->json);
    meta_xml_ckpts_free(list, n);
    if (r == CTL_EXIT_OK && ctx->json)
        ctl_print_json(ret, JSON_COMPACT);
    else if (r == CTL_EXIT_OK && release)
        ctl_note("released: ckptd no longer tracks these checkpoints;"
                 " the commands above hand them to libvirt");
    return r;
}

int
ctl_cmd_checkpoint_export_xml(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "release", no_argument, NULL, OPT_RELEASE },
        { "domain", required_argument, NULL, OPT_DOMAIN },
        CTL_OPT_HELP, { 0 }
    };
    const char *dir = NULL, *domain = NULL;
    bool release = false;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        switch (c) {
        case 'h': return CTL_EXIT_OK;
        case OPT_OUTPUT: dir = optarg; break;
        case OPT_RELEASE: release = true; break;
        case OPT_DOMAIN: domain = optarg; break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if ((r = ctl_operands(ctx, argc, argv, 0, 0)) != CTL_EXIT_OK)
        return r;
    if (dir && !*dir)
        return ctl_usage_error(ctx, "--output needs a directory");
    if (domain && !dir)
        return ctl_usage_error(ctx, "--domain goes with --output");
    if (dir)
        return ctl_export_to_dir(ctx, dir, release, domain ? domain : "DOMAIN");
    return ctl_call_print(ctx, "checkpoint-export",
                          release ? json_pack("{s:b}", "release", 1) : json_object(),
                          ctl_print_xml_reply, NULL);
}
