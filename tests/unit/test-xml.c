/* metadata/xml.c: libvirt checkpoint and backup XML.  Round trips over the
 * corpus in tests/unit/xml/valid, refusals over tests/unit/xml/bad (file
 * name prefix says which parser must refuse it: any-, checkpoint-,
 * checkpoints-, backup-), exact virsh layouts, and the security limits.
 * Run from the project root (as make check does). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>

#include <libxml/xmlerror.h>
#include <libxml/globals.h>

#include "common/common.h"
#include "metadata/metadata.h"
#include "metadata/xml.h"

#define CORPUS "tests/unit/xml"

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        print_error("cannot open %s (run from the project root)\n", path);
        fail();
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Sorted names of the regular .xml files in dir. */
static void
list_corpus(const char *dir, struct str_vec *out)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        print_error("cannot open %s (run from the project root)\n", dir);
        fail();
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".xml") == 0)
            str_vec_append(out, xstrdup(de->d_name));
    }
    closedir(d);
    for (size_t i = 1; i < out->len; i++)       /* few files: insertion sort */
        for (size_t j = i; j > 0 && strcmp(out->ptr[j - 1], out->ptr[j]) > 0; j--) {
            char *t = out->ptr[j];
            out->ptr[j] = out->ptr[j - 1];
            out->ptr[j - 1] = t;
        }
}

static bool
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool verbose;

/* ---------- round trips ---------- */

static void
round_trip_checkpoint(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt a, b;
    if (meta_xml_parse_checkpoint(xml, len, &a, &e) != 0) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
    char *out = meta_xml_format_checkpoint(&a);
    if (verbose)
        print_message("%s ->\n%s", file, out);
    if (meta_xml_parse_checkpoint(out, strlen(out), &b, &e) != 0) {
        print_error("%s: formatted output does not parse: %s\n%s", file, e.msg, out);
        fail();
    }
    assert_true(meta_xml_ckpt_equal(&a, &b));
    char *again = meta_xml_format_checkpoint(&b);
    assert_string_equal(out, again);            /* formatting is stable */

    /* The list parser takes a single <domaincheckpoint> too. */
    struct meta_xml_ckpt *list;
    size_t n;
    assert_int_equal(meta_xml_parse_checkpoints(xml, len, &list, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_true(meta_xml_ckpt_equal(&a, &list[0]));
    meta_xml_ckpts_free(list, n);

    free(out);
    free(again);
    meta_xml_ckpt_clear(&a);
    meta_xml_ckpt_clear(&b);
}

static void
round_trip_checkpoints(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt *a, *b;
    size_t na, nb;
    if (meta_xml_parse_checkpoints(xml, len, &a, &na, &e) != 0) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
    char *out = meta_xml_format_checkpoints(a, na);
    if (verbose)
        print_message("%s ->\n%s", file, out);
    if (meta_xml_parse_checkpoints(out, strlen(out), &b, &nb, &e) != 0) {
        print_error("%s: formatted output does not parse: %s\n%s", file, e.msg, out);
        fail();
    }
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_true(meta_xml_ckpt_equal(&a[i], &b[i]));
    char *again = meta_xml_format_checkpoints(b, nb);
    assert_string_equal(out, again);
    free(out);
    free(again);
    meta_xml_ckpts_free(a, na);
    meta_xml_ckpts_free(b, nb);
}

static void
round_trip_backup(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_backup a, b;
    if (meta_xml_parse_backup(xml, len, &a, &e) != 0) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
    char *out = meta_xml_format_backup(&a);
    if (verbose)
        print_message("%s ->\n%s", file, out);
    if (meta_xml_parse_backup(out, strlen(out), &b, &e) != 0) {
        print_error("%s: formatted output does not parse: %s\n%s", file, e.msg, out);
        fail();
    }
    assert_true(meta_xml_backup_equal(&a, &b));
    char *again = meta_xml_format_backup(&b);
    assert_string_equal(out, again);
    free(out);
    free(again);
    meta_xml_backup_clear(&a);
    meta_xml_backup_clear(&b);
}

static void
test_valid_corpus_round_trips(void **state)
{
    struct str_vec files = { 0 };
    list_corpus(CORPUS "/valid", &files);
    size_t ck = 0, cks = 0, bk = 0;
    for (size_t i = 0; i < files.len; i++) {
        const char *f = files.ptr[i];
        CLEANUP_FREE char *path = xasprintf("%s/valid/%s", CORPUS, f);
        size_t len;
        CLEANUP_FREE char *xml = slurp(path, &len);
        if (has_prefix(f, "checkpoints-")) {
            round_trip_checkpoints(f, xml, len);
            cks++;
        } else if (has_prefix(f, "checkpoint-")) {
            round_trip_checkpoint(f, xml, len);
            ck++;
        } else if (has_prefix(f, "backup-")) {
            round_trip_backup(f, xml, len);
            bk++;
        } else {
            print_error("%s: unknown corpus prefix\n", f);
            fail();
        }
    }
    str_vec_free_all(&files);
    assert_true(ck >= 7);
    assert_true(cks >= 2);
    assert_true(bk >= 5);
}

/* ---------- refusals ---------- */

static void
expect_refused(const char *file, const char *which, int rc, const struct ckpt_error *e)
{
    if (rc != -1 || e->code != CKPT_ERR_INVALID_PARAMETER || e->msg[0] == '\0') {
        print_error("%s: %s returned %d (code %d, \"%s\"), expected InvalidParameter\n",
                    file, which, rc, (int) e->code, e->msg);
        fail();
    }
    if (verbose)
        print_message("%-34s %-12s %s\n", file, which, e->msg);
}

static void
refuse_checkpoint(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt c;
    memset(&c, 0xA5, sizeof c);
    expect_refused(file, "checkpoint", meta_xml_parse_checkpoint(xml, len, &c, &e), &e);
    assert_null(c.name);                /* left empty: nothing to free */
    assert_null(c.disks);
    meta_xml_ckpt_clear(&c);
}

static void
refuse_checkpoints(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt *list = (void *) 1;
    size_t n = 99;
    expect_refused(file, "checkpoints",
                   meta_xml_parse_checkpoints(xml, len, &list, &n, &e), &e);
    assert_null(list);
    assert_int_equal(n, 0);
}

static void
refuse_backup(const char *file, const char *xml, size_t len)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_backup b;
    memset(&b, 0xA5, sizeof b);
    expect_refused(file, "backup", meta_xml_parse_backup(xml, len, &b, &e), &e);
    assert_null(b.disks);
    assert_null(b.transport);
    meta_xml_backup_clear(&b);
}

static void
test_bad_corpus_refused(void **state)
{
    struct str_vec files = { 0 };
    list_corpus(CORPUS "/bad", &files);
    assert_true(files.len >= 30);
    for (size_t i = 0; i < files.len; i++) {
        const char *f = files.ptr[i];
        CLEANUP_FREE char *path = xasprintf("%s/bad/%s", CORPUS, f);
        size_t len;
        CLEANUP_FREE char *xml = slurp(path, &len);
        if (has_prefix(f, "any-")) {
            refuse_checkpoint(f, xml, len);
            refuse_checkpoints(f, xml, len);
            refuse_backup(f, xml, len);
        } else if (has_prefix(f, "checkpoints-")) {
            refuse_checkpoints(f, xml, len);
        } else if (has_prefix(f, "checkpoint-")) {
            refuse_checkpoint(f, xml, len);
            refuse_checkpoints(f, xml, len);
        } else if (has_prefix(f, "backup-")) {
            refuse_backup(f, xml, len);
        } else {
            print_error("%s: unknown corpus prefix\n", f);
            fail();
        }
    }
    str_vec_free_all(&files);
}

/* The message of one refused checkpoint document. */
static void
checkpoint_error(const char *xml, char *msg, size_t size)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt c;
    assert_int_equal(meta_xml_parse_checkpoint(xml, strlen(xml), &c, &e), -1);
    assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
    snprintf(msg, size, "%s", e.msg);
}

static void
assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL) {
        print_error("\"%s\" does not contain \"%s\"\n", hay, needle);
        fail();
    }
}

static void
test_hostile_messages(void **state)
{
    char msg[512];
    size_t len;
    CLEANUP_FREE char *xxe = slurp(CORPUS "/bad/any-xxe-file.xml", &len);
    checkpoint_error(xxe, msg, sizeof msg);
    assert_contains(msg, "DTDs are not accepted");
    CLEANUP_FREE char *lol = slurp(CORPUS "/bad/any-billion-laughs.xml", &len);
    checkpoint_error(lol, msg, sizeof msg);
    assert_contains(msg, "DTDs are not accepted");
    checkpoint_error("<!DOCTYPE x><domaincheckpoint/>", msg, sizeof msg);
    assert_contains(msg, "DTDs are not accepted");

    /* libxml2's first complaint, with the line. */
    checkpoint_error("<domaincheckpoint>\n<name>c1</nam>\n</domaincheckpoint>", msg, sizeof msg);
    assert_contains(msg, "malformed XML (line 2)");
    checkpoint_error("<domaincheckpoint><name>&x;</name></domaincheckpoint>", msg, sizeof msg);
    assert_contains(msg, "'x'");

    checkpoint_error("<domainbackup/>", msg, sizeof msg);
    assert_contains(msg, "<domainbackup>");
    checkpoint_error("<domaincheckpoint xmlns='urn:x'/>", msg, sizeof msg);
    assert_contains(msg, "namespace");
    checkpoint_error("<domaincheckpoint><disks><disk name='vda' checkpoint='yes'/></disks>"
                     "</domaincheckpoint>", msg, sizeof msg);
    assert_contains(msg, "checkpoint='yes'");
    assert_contains(msg, "vda");
    checkpoint_error("<domaincheckpoint><name>a b</name></domaincheckpoint>", msg, sizeof msg);
    assert_contains(msg, "<name> 'a b'");
}

/* libxml2's error handlers are ours only during a parse. */
static void
test_error_handlers_restored(void **state)
{
    xmlStructuredErrorFunc s = xmlStructuredError;
    void *sctx = xmlStructuredErrorContext;
    xmlGenericErrorFunc g = xmlGenericError;
    void *gctx = xmlGenericErrorContext;
    char msg[512];
    checkpoint_error("<domaincheckpoint>", msg, sizeof msg);
    assert_ptr_equal(xmlStructuredError, s);
    assert_ptr_equal(xmlStructuredErrorContext, sctx);
    assert_ptr_equal(xmlGenericError, g);
    assert_ptr_equal(xmlGenericErrorContext, gctx);
}

/* A document of n bytes: a checkpoint whose description fills it. */
static char *
sized_doc(size_t n)
{
    const char *head = "<domaincheckpoint><description>";
    const char *tail = "</description></domaincheckpoint>";
    size_t h = strlen(head), t = strlen(tail);
    assert_true(n > h + t);
    char *doc = xmalloc(n + 1);
    memcpy(doc, head, h);
    memset(doc + h, 'x', n - h - t);
    memcpy(doc + n - t, tail, t);
    doc[n] = '\0';
    return doc;
}

static void
test_size_limit(void **state)
{
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt c;
    CLEANUP_FREE char *big = sized_doc(2 * 1024 * 1024);
    assert_int_equal(meta_xml_parse_checkpoint(big, strlen(big), &c, &e), -1);
    assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
    assert_contains(e.msg, "over the limit");

    CLEANUP_FREE char *edge = sized_doc(META_XML_MAX_BYTES + 1);
    assert_int_equal(meta_xml_parse_checkpoint(edge, strlen(edge), &c, &e), -1);

    CLEANUP_FREE char *fits = sized_doc(META_XML_MAX_BYTES);
    assert_int_equal(meta_xml_parse_checkpoint(fits, strlen(fits), &c, &e), 0);
    assert_int_equal(strlen(c.description), META_XML_MAX_BYTES - 64);
    meta_xml_ckpt_clear(&c);

    /* The length given is what counts, not a NUL further on. */
    assert_int_equal(meta_xml_parse_checkpoint(big, 18, &c, &e), -1);
    assert_int_equal(meta_xml_parse_checkpoint(NULL, 0, &c, &e), -1);
}

/* XInclude is never processed: the element is a foreign one, which
 * libvirt's schema does not allow in <description>, so it is refused. */
static void
test_xinclude_not_processed(void **state)
{
    const char *xml =
        "<domaincheckpoint xmlns:xi='http://www.w3.org/2001/XInclude'>"
        "<name>c1</name><description><xi:include href='/etc/passwd' parse='text'/>"
        "</description></domaincheckpoint>";
    char msg[512];
    checkpoint_error(xml, msg, sizeof msg);
    assert_contains(msg, "<xi:include>");
    assert_contains(msg, "<description>");
    assert_true(strstr(msg, "root:") == NULL);
}

/* What libvirt's schemas do not know is refused, naming the element and
 * where it stood; what they leave open (<domain>'s content) is not. */
static void
test_schema_messages(void **state)
{
    char msg[512];
    checkpoint_error("<domaincheckpoint><name>c1</name><frob/></domaincheckpoint>",
                     msg, sizeof msg);
    assert_contains(msg, "element <frob> is not allowed in <domaincheckpoint>");
    assert_contains(msg, "schema");
    checkpoint_error("<domaincheckpoint><disks><disk name='vda'><x/></disk></disks>"
                     "</domaincheckpoint>", msg, sizeof msg);
    assert_contains(msg, "element <x> is not allowed in <disk>");

    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt c;
    const char *dom = "<domaincheckpoint><name>c1</name><domain type='kvm'>"
                      "<anything><at-all/></anything></domain></domaincheckpoint>";
    assert_int_equal(meta_xml_parse_checkpoint(dom, strlen(dom), &c, &e), 0);
    assert_string_equal(c.name, "c1");
    meta_xml_ckpt_clear(&c);

    struct meta_xml_backup b;
    const char *push = "<domainbackup><disks><disk name='vda'><scratch file='/s'/>"
                       "</disk></disks></domainbackup>";
    assert_int_equal(meta_xml_parse_backup(push, strlen(push), &b, &e), -1);
    assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
    assert_contains(e.msg, "element <scratch> is not allowed in <disk>");
    const char *pull = "<domainbackup mode='pull'><disks><disk name='vda'>"
                       "<target file='/s'/></disk></disks></domainbackup>";
    assert_int_equal(meta_xml_parse_backup(pull, strlen(pull), &b, &e), -1);
    assert_contains(e.msg, "element <target> is not allowed in <disk>");
}

/* ---------- disks named by their source file ---------- */

static void
test_resolve_disk_paths(void **state)
{
    struct meta_disk disks[] = {
        { .disk = "vda", .filename = "/images/root.qcow2" },
        { .disk = "vdb", .filename = "/images/data.qcow2" },
    };
    struct meta_tree t = { .disks = disks, .ndisks = 2 };
    struct ckpt_error e = { 0 };
    struct meta_xml_ckpt c;

    const char *ck = "<domaincheckpoint><name>c1</name><disks>"
                     "<disk name='/images/data.qcow2'/><disk name='vda' checkpoint='no'/>"
                     "<disk name='/images/other.qcow2'/></disks></domaincheckpoint>";
    assert_int_equal(meta_xml_parse_checkpoint_vm(ck, strlen(ck), &t, &c, &e), 0);
    assert_string_equal(c.disks[0].name, "vdb");
    assert_true(c.disks[0].checkpoint);
    assert_string_equal(c.disks[1].name, "vda");
    assert_string_equal(c.disks[2].name, "/images/other.qcow2");   /* no such disk */
    meta_xml_ckpt_clear(&c);

    /* Without the VM's disks the names stay as written. */
    assert_int_equal(meta_xml_parse_checkpoint(ck, strlen(ck), &c, &e), 0);
    assert_string_equal(c.disks[0].name, "/images/data.qcow2");
    meta_xml_ckpt_clear(&c);

    /* One disk by both names is one disk given twice. */
    const char *twice = "<domaincheckpoint><disks><disk name='vda'/>"
                        "<disk name='/images/root.qcow2'/></disks></domaincheckpoint>";
    memset(&c, 0xA5, sizeof c);
    assert_int_equal(meta_xml_parse_checkpoint_vm(twice, strlen(twice), &t, &c, &e), -1);
    assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
    assert_contains(e.msg, "disk 'vda' is listed twice");
    assert_null(c.disks);

    struct meta_xml_ckpt *list;
    size_t n;
    const char *l = "<checkpoints><domaincheckpoint><name>c1</name><disks>"
                    "<disk name='/images/root.qcow2'/></disks></domaincheckpoint>"
                    "</checkpoints>";
    assert_int_equal(meta_xml_parse_checkpoints_vm(l, strlen(l), &t, &list, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].disks[0].name, "vda");
    meta_xml_ckpts_free(list, n);

    struct meta_xml_backup b;
    const char *bk = "<domainbackup mode='pull'><disks><disk name='/images/root.qcow2'/>"
                     "<disk name='/images/data.qcow2' backup='no'/></disks></domainbackup>";
    assert_int_equal(meta_xml_parse_backup_vm(bk, strlen(bk), &t, &b, &e), 0);
    assert_string_equal(b.disks[0].name, "vda");
    assert_string_equal(b.disks[1].name, "vdb");
    meta_xml_backup_clear(&b);
    const char *bk2 = "<domainbackup mode='pull'><disks><disk name='/images/data.qcow2'/>"
                      "<disk name='vdb'/></disks></domainbackup>";
    assert_int_equal(meta_xml_parse_backup_vm(bk2, strlen(bk2), &t, &b, &e), -1);
    assert_contains(e.msg, "disk 'vdb' is listed twice");
}

/* ---------- fields ---------- */

static void
parse_file_checkpoint(const char *file, struct meta_xml_ckpt *c)
{
    CLEANUP_FREE char *path = xasprintf("%s/valid/%s", CORPUS, file);
    size_t len;
    CLEANUP_FREE char *xml = slurp(path, &len);
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoint(xml, len, c, &e) != 0) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
}

static void
parse_file_backup(const char *file, struct meta_xml_backup *b)
{
    CLEANUP_FREE char *path = xasprintf("%s/valid/%s", CORPUS, file);
    size_t len;
    CLEANUP_FREE char *xml = slurp(path, &len);
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_backup(xml, len, b, &e) != 0) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
}

static void
test_fields_dumpxml(void **state)
{
    struct meta_xml_ckpt c;
    parse_file_checkpoint("checkpoint-dumpxml.xml", &c);
    assert_string_equal(c.name, "1700000100");
    assert_string_equal(c.description, "Nightly, after the database dump");
    assert_string_equal(c.parent, "1700000000");
    assert_true(c.has_ctime);
    assert_int_equal(c.ctime, 1700000100);
    assert_int_equal(c.ndisks, 2);
    assert_string_equal(c.disks[0].name, "vda");
    assert_true(c.disks[0].checkpoint);
    assert_string_equal(c.disks[0].bitmap, "1700000100");
    assert_false(c.disks[0].has_size);
    assert_string_equal(c.disks[1].name, "vdb");
    assert_false(c.disks[1].checkpoint);
    assert_null(c.disks[1].bitmap);
    meta_xml_ckpt_clear(&c);
}

static void
test_fields_create_defaults(void **state)
{
    struct meta_xml_ckpt c;
    parse_file_checkpoint("checkpoint-create.xml", &c);
    assert_null(c.name);
    assert_null(c.parent);
    assert_false(c.has_ctime);
    assert_int_equal(c.ndisks, 2);
    assert_null(c.disks[0].bitmap);
    meta_xml_ckpt_clear(&c);

    /* No checkpoint= means bitmap; a path is a valid disk name. */
    parse_file_checkpoint("checkpoint-redefine-domain.xml", &c);
    assert_string_equal(c.name, "c1");          /* not the <domain>'s <name> */
    assert_int_equal(c.ndisks, 3);              /* not the <domain>'s disks */
    assert_true(c.disks[1].checkpoint);
    assert_string_equal(c.disks[1].bitmap, "c1");
    assert_string_equal(c.disks[2].name, "/var/lib/images/data.qcow2");
    assert_true(c.disks[2].checkpoint);
    meta_xml_ckpt_clear(&c);

    parse_file_checkpoint("checkpoint-minimal.xml", &c);
    assert_null(c.name);
    assert_int_equal(c.ndisks, 0);
    meta_xml_ckpt_clear(&c);

    parse_file_checkpoint("checkpoint-size.xml", &c);
    assert_true(c.disks[0].has_size);
    assert_true(c.disks[0].size == 2097152);
    assert_true(c.disks[1].has_size);
    assert_true(c.disks[1].size == 0);
    meta_xml_ckpt_clear(&c);
}

static void
test_fields_escaped(void **state)
{
    struct meta_xml_ckpt c;
    parse_file_checkpoint("checkpoint-escaped.xml", &c);
    assert_string_equal(c.name, "esc");
    assert_string_equal(c.description,
                        "a <b> & \"quoted\" 'single' \xE2\x80\x94 Gr\xC3\xBC\xC3\x9F" "e, "
                        "\xE6\x97\xA5\xE6\x9C\xAC <raw> &  \xE2\x98\xBA\nsecond line");
    assert_int_equal(c.ctime, 42);
    assert_string_equal(c.disks[0].bitmap, "odd & 'name'");

    char *out = meta_xml_format_checkpoint(&c);
    assert_contains(out, "<description>a &lt;b&gt; &amp; &quot;quoted&quot; &apos;single&apos;");
    assert_contains(out, "bitmap='odd &amp; &apos;name&apos;'");
    free(out);
    meta_xml_ckpt_clear(&c);
}

static void
test_fields_backup(void **state)
{
    struct meta_xml_backup b;
    parse_file_backup("backup-pull-unix.xml", &b);
    assert_true(b.pull);
    assert_string_equal(b.incremental, "1700000100");
    assert_string_equal(b.transport, "unix");
    assert_string_equal(b.socket, "/run/ckptd/vm1/backup.sock");
    assert_null(b.host);
    assert_null(b.port);
    assert_false(b.tls);
    assert_int_equal(b.ndisks, 2);
    assert_string_equal(b.disks[0].name, "vda");
    assert_true(b.disks[0].backup);
    assert_string_equal(b.disks[0].scratch, "/var/tmp/vda.scratch");
    assert_null(b.disks[0].exportname);
    assert_false(b.disks[1].backup);
    assert_null(b.disks[1].scratch);
    meta_xml_backup_clear(&b);

    parse_file_backup("backup-pull-tcp.xml", &b);
    assert_string_equal(b.transport, "tcp");    /* the default transport */
    assert_string_equal(b.host, "backup.example.org");
    assert_string_equal(b.port, "10809");
    assert_true(b.tls);
    assert_null(b.incremental);
    assert_string_equal(b.disks[0].exportname, "root");
    assert_string_equal(b.disks[0].exportbitmap, "changes-vda");
    assert_string_equal(b.disks[0].driver, "qcow2");
    assert_true(b.disks[0].backup);             /* backup= absent: yes */
    assert_true(b.disks[1].block);
    assert_string_equal(b.disks[1].scratch, "/dev/mapper/scratch-vdc");
    meta_xml_backup_clear(&b);

    parse_file_backup("backup-pull-perdisk.xml", &b);
    assert_null(b.port);                        /* port='0': none given */
    assert_int_equal(b.disks[0].backupmode, META_XML_BACKUPMODE_INCREMENTAL);
    assert_string_equal(b.disks[0].incremental, "c1");
    assert_int_equal(b.disks[1].backupmode, META_XML_BACKUPMODE_FULL);
    meta_xml_backup_clear(&b);

    parse_file_backup("backup-push.xml", &b);
    assert_false(b.pull);                       /* libvirt's default mode */
    assert_null(b.transport);
    assert_string_equal(b.disks[1].target, "/srv/backup/vdb.raw");
    assert_string_equal(b.disks[1].driver, "raw");
    assert_null(b.disks[1].scratch);
    meta_xml_backup_clear(&b);

    parse_file_backup("backup-pull-minimal.xml", &b);
    assert_true(b.pull);
    assert_null(b.transport);
    assert_int_equal(b.ndisks, 0);
    meta_xml_backup_clear(&b);

    const char *enc =
        "<domainbackup mode='pull'><disks><disk name='vda'><scratch file='/s'>"
        "<encryption format='luks'><secret type='passphrase' uuid='x'/></encryption>"
        "</scratch></disk></disks></domainbackup>";
    struct ckpt_error e = { 0 };
    assert_int_equal(meta_xml_parse_backup(enc, strlen(enc), &b, &e), 0);
    assert_true(b.disks[0].encryption);
    meta_xml_backup_clear(&b);
}

static void
test_checkpoints_list_fields(void **state)
{
    size_t len, n;
    CLEANUP_FREE char *xml = slurp(CORPUS "/valid/checkpoints-list.xml", &len);
    struct meta_xml_ckpt *list;
    struct ckpt_error e = { 0 };
    assert_int_equal(meta_xml_parse_checkpoints(xml, len, &list, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].name, "full-1");
    assert_null(list[0].parent);
    assert_string_equal(list[1].parent, "full-1");
    assert_false(list[1].disks[1].checkpoint);
    assert_string_equal(list[2].description, "before upgrade");
    meta_xml_ckpts_free(list, n);

    const char *empty = "<checkpoints>\n</checkpoints>";
    assert_int_equal(meta_xml_parse_checkpoints(empty, strlen(empty), &list, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(list);

    /* Which entry was wrong is said. */
    CLEANUP_FREE char *bad = slurp(CORPUS "/bad/checkpoints-bad-entry.xml", &len);
    assert_int_equal(meta_xml_parse_checkpoints(bad, len, &list, &n, &e), -1);
    assert_contains(e.msg, "<checkpoints> entry 2");
}

/* ---------- exact layouts ---------- */

static void
test_format_checkpoint_exact(void **state)
{
    struct meta_xml_disk disks[] = {
        { .name = "vda", .checkpoint = true, .bitmap = "c2", .has_size = true, .size = 1048576 },
        { .name = "vdb", .checkpoint = false, .bitmap = "ignored", .has_size = true, .size = 1 },
        { .name = "vdc", .checkpoint = true, .bitmap = "c2" },
    };
    struct meta_xml_ckpt c = {
        .name = "c2", .description = "something fun", .parent = "1525111885",
        .has_ctime = true, .ctime = 1553648510, .disks = disks, .ndisks = 3,
    };
    /* As `virsh checkpoint-dumpxml --size` prints it. */
    const char *want =
        "<domaincheckpoint>\n"
        "  <name>c2</name>\n"
        "  <description>something fun</description>\n"
        "  <parent>\n"
        "    <name>1525111885</name>\n"
        "  </parent>\n"
        "  <creationTime>1553648510</creationTime>\n"
        "  <disks>\n"
        "    <disk name='vda' checkpoint='bitmap' bitmap='c2' size='1048576'/>\n"
        "    <disk name='vdb' checkpoint='no'/>\n"
        "    <disk name='vdc' checkpoint='bitmap' bitmap='c2'/>\n"
        "  </disks>\n"
        "</domaincheckpoint>\n";
    char *got = meta_xml_format_checkpoint(&c);
    assert_string_equal(got, want);
    free(got);

    /* Absent fields are left out, like libvirt's formatter. */
    struct meta_xml_ckpt bare = { .name = "c1" };
    got = meta_xml_format_checkpoint(&bare);
    assert_string_equal(got, "<domaincheckpoint>\n  <name>c1</name>\n</domaincheckpoint>\n");
    free(got);
}

static void
test_format_checkpoints_exact(void **state)
{
    struct meta_xml_disk d1[] = { { .name = "vda", .checkpoint = true, .bitmap = "c1" } };
    struct meta_xml_disk d2[] = { { .name = "vda", .checkpoint = true, .bitmap = "c2" } };
    struct meta_xml_ckpt c[] = {
        { .name = "c1", .has_ctime = true, .ctime = 100, .disks = d1, .ndisks = 1 },
        { .name = "c2", .parent = "c1", .has_ctime = true, .ctime = 200, .disks = d2, .ndisks = 1 },
    };
    const char *want =
        "<checkpoints>\n"
        "  <domaincheckpoint>\n"
        "    <name>c1</name>\n"
        "    <creationTime>100</creationTime>\n"
        "    <disks>\n"
        "      <disk name='vda' checkpoint='bitmap' bitmap='c1'/>\n"
        "    </disks>\n"
        "  </domaincheckpoint>\n"
        "  <domaincheckpoint>\n"
        "    <name>c2</name>\n"
        "    <parent>\n"
        "      <name>c1</name>\n"
        "    </parent>\n"
        "    <creationTime>200</creationTime>\n"
        "    <disks>\n"
        "      <disk name='vda' checkpoint='bitmap' bitmap='c2'/>\n"
        "    </disks>\n"
        "  </domaincheckpoint>\n"
        "</checkpoints>\n";
    char *got = meta_xml_format_checkpoints(c, 2);
    assert_string_equal(got, want);
    free(got);
    got = meta_xml_format_checkpoints(NULL, 0);
    assert_string_equal(got, "<checkpoints/>\n");
    free(got);
}

static void
test_format_backup_exact(void **state)
{
    struct meta_xml_backup_disk disks[] = {
        { .name = "vda", .backup = true, .exportname = "vda",
          .exportbitmap = "backup-vda", .scratch = "/var/tmp/vda.scratch" },
        { .name = "vdb", .backup = false },
    };
    struct meta_xml_backup b = {
        .pull = true, .incremental = "1525889631", .transport = "unix",
        .socket = "/run/ckptd/vm1/nbd.sock", .disks = disks, .ndisks = 2,
    };
    /* As `virsh backup-dumpxml` prints a running pull job. */
    const char *want =
        "<domainbackup mode='pull'>\n"
        "  <incremental>1525889631</incremental>\n"
        "  <server transport='unix' socket='/run/ckptd/vm1/nbd.sock'/>\n"
        "  <disks>\n"
        "    <disk name='vda' backup='yes' type='file' exportname='vda' exportbitmap='backup-vda'>\n"
        "      <scratch file='/var/tmp/vda.scratch'/>\n"
        "    </disk>\n"
        "    <disk name='vdb' backup='no'/>\n"
        "  </disks>\n"
        "</domainbackup>\n";
    char *got = meta_xml_format_backup(&b);
    assert_string_equal(got, want);
    free(got);

    struct meta_xml_backup tcp = {
        .pull = true, .transport = "tcp", .host = "localhost", .port = "10809", .tls = true,
    };
    got = meta_xml_format_backup(&tcp);
    assert_string_equal(got, "<domainbackup mode='pull'>\n"
                        "  <server transport='tcp' tls='yes' name='localhost' port='10809'/>\n"
                        "</domainbackup>\n");
    free(got);
}

/* What XML cannot carry is replaced, so the output always parses. */
static void
test_format_unrepresentable_bytes(void **state)
{
    struct meta_xml_disk d = { .name = "v\tda\n", .checkpoint = true, .bitmap = "b\rm" };
    struct meta_xml_ckpt c = {
        .name = "c1", .description = "bad \xFF utf8 \x01 ctl \xC0\xAF overlong \xED\xA0\x80 "
        "surrogate \xEF\xBF\xBE nonchar, tab\there\r\nok \xF0\x9F\x98\x80",
        .disks = &d, .ndisks = 1,
    };
    char *out = meta_xml_format_checkpoint(&c);
    struct meta_xml_ckpt back;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoint(out, strlen(out), &back, &e) != 0) {
        print_error("%s\n%s", e.msg, out);
        fail();
    }
    assert_string_equal(back.description,
                        "bad \xEF\xBF\xBD utf8 \xEF\xBF\xBD ctl \xEF\xBF\xBD\xEF\xBF\xBD overlong "
                        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD surrogate \xEF\xBF\xBD nonchar, "
                        "tab\there\r\nok \xF0\x9F\x98\x80");
    assert_string_equal(back.disks[0].name, "v\tda\n");    /* attributes keep them */
    assert_string_equal(back.disks[0].bitmap, "b\rm");
    free(out);
    meta_xml_ckpt_clear(&back);
}

int
main(void)
{
    verbose = getenv("TEST_XML_VERBOSE") != NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_corpus_round_trips),
        cmocka_unit_test(test_bad_corpus_refused),
        cmocka_unit_test(test_hostile_messages),
        cmocka_unit_test(test_error_handlers_restored),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_xinclude_not_processed),
        cmocka_unit_test(test_schema_messages),
        cmocka_unit_test(test_resolve_disk_paths),
        cmocka_unit_test(test_fields_dumpxml),
        cmocka_unit_test(test_fields_create_defaults),
        cmocka_unit_test(test_fields_escaped),
        cmocka_unit_test(test_fields_backup),
        cmocka_unit_test(test_checkpoints_list_fields),
        cmocka_unit_test(test_format_checkpoint_exact),
        cmocka_unit_test(test_format_checkpoints_exact),
        cmocka_unit_test(test_format_backup_exact),
        cmocka_unit_test(test_format_unrepresentable_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
