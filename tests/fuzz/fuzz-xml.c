/* libFuzzer harness: libvirt checkpoint and backup XML from a client.
 * Every input goes to the three parsers.  None may crash, leak or print;
 * whatever one accepts must format into a document that parses back to
 * the same thing (format -> parse is the redefine/export round trip). */
#include <stdio.h>

#include "metadata/xml.h"

static void
check_checkpoint(const struct meta_xml_ckpt *c)
{
    char *out = meta_xml_format_checkpoint(c);
    struct meta_xml_ckpt back;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoint(out, strlen(out), &back, &e) != 0 ||
        !meta_xml_ckpt_equal(c, &back)) {
        fprintf(stderr, "checkpoint round trip failed (%s):\n%s", e.msg, out);
        abort();
    }
    meta_xml_ckpt_clear(&back);
    free(out);
}

static void
check_checkpoints(const struct meta_xml_ckpt *c, size_t n)
{
    char *out = meta_xml_format_checkpoints(c, n);
    struct meta_xml_ckpt *back;
    size_t nb;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoints(out, strlen(out), &back, &nb, &e) != 0 || nb != n) {
        fprintf(stderr, "checkpoints round trip failed (%s):\n%s", e.msg, out);
        abort();
    }
    for (size_t i = 0; i < n; i++)
        if (!meta_xml_ckpt_equal(&c[i], &back[i])) {
            fprintf(stderr, "checkpoints round trip differs at %zu:\n%s", i, out);
            abort();
        }
    meta_xml_ckpts_free(back, nb);
    free(out);
}

static void
check_backup(const struct meta_xml_backup *b)
{
    char *out = meta_xml_format_backup(b);
    struct meta_xml_backup back;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_backup(out, strlen(out), &back, &e) != 0 ||
        !meta_xml_backup_equal(b, &back)) {
        fprintf(stderr, "backup round trip failed (%s):\n%s", e.msg, out);
        abort();
    }
    meta_xml_backup_clear(&back);
    free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
        quiet = true;
    }
    const char *xml = (const char *) data;
    struct ckpt_error e = { 0 };

    struct meta_xml_ckpt c;
    if (meta_xml_parse_checkpoint(xml, size, &c, &e) == 0) {
        check_checkpoint(&c);
        meta_xml_ckpt_clear(&c);
    }

    struct meta_xml_ckpt *list;
    size_t n;
    if (meta_xml_parse_checkpoints(xml, size, &list, &n, &e) == 0) {
        check_checkpoints(list, n);
        meta_xml_ckpts_free(list, n);
    }

    struct meta_xml_backup b;
    if (meta_xml_parse_backup(xml, size, &b, &e) == 0) {
        check_backup(&b);
        meta_xml_backup_clear(&b);
    }
    return 0;
}
