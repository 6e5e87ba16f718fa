/* ckptd: libvirt's checkpoint and backup XML, read and written.  Pure: the
 * only "input" is libxml2 parsing a document held in memory.  Element by
 * element after libvirt's formatcheckpoint / formatbackup pages and the
 * domaincheckpoint.rng / domainbackup.rng schemas.
 *
 * xml.c: meta_xml_*   parse and format <domaincheckpoint>, <checkpoints>
 *                     and <domainbackup>
 *
 * Hostile input: documents over META_XML_MAX_BYTES are refused unread; any
 * DOCTYPE is refused (no DTD, internal or external, is ever processed, so no
 * entity can be defined, expanded or fetched); the network is never used.
 * Every failure is CKPT_ERR_INVALID_PARAMETER with a message naming the
 * element or attribute (or libxml2's first complaint, with its line).
 */
#ifndef CKPTD_XML_H
#define CKPTD_XML_H

#include "common/common.h"

#define META_XML_MAX_BYTES (1024 * 1024)

/* --- xml.c: checkpoints --- */
struct meta_xml_disk {
    char *name;            /* disk target, e.g. "vda" */
    bool checkpoint;       /* checkpoint='bitmap' (true) or 'no' (false) */
    char *bitmap;          /* bitmap= ; NULL when absent */
    bool has_size; uint64_t size;   /* size= (dumpxml with --size) */
};
struct meta_xml_ckpt {
    char *name, *description, *parent;   /* NULL when absent */
    bool has_ctime; int64_t ctime;       /* <creationTime> */
    struct meta_xml_disk *disks; size_t ndisks;   /* in document order */
};
/* <domaincheckpoint> (exactly one).  Validates: name pattern via
 * meta_name_valid when present (also the parent's), checkpoint attr
 * 'bitmap'|'no' (absent means 'bitmap', as in libvirt), bitmap=/size= only
 * with 'bitmap', numbers, disk names present and not repeated.  An element
 * libvirt's schema does not allow where it stands is refused, as libvirt
 * refuses it ("failed to validate against schema"); <domain>'s content is
 * domain.rng's and is not looked at.  A known element given twice is an
 * error.  Empty <name>, <description>, <parent><name> count as absent, as
 * libvirt reads them.  e->code = CKPT_ERR_INVALID_PARAMETER with a message
 * naming the element/attribute.  Returns 0 or -1; on -1 *out is left
 * empty (safe to clear). */
int meta_xml_parse_checkpoint(const char *xml, size_t len, struct meta_xml_ckpt *out,
                              struct ckpt_error *e);
/* Either one <domaincheckpoint> or a <checkpoints> list of them (the list
 * form is what `virsh checkpoint-list --redefine`-style tooling and our
 * export produce).  Names given in a list must differ.  *out is an array of
 * *n (possibly 0 for an empty list); free with meta_xml_ckpts_free. */
int meta_xml_parse_checkpoints(const char *xml, size_t len, struct meta_xml_ckpt **out,
                               size_t *n, struct ckpt_error *e);
/* libvirt's dumpxml layout: <domaincheckpoint> with <name>, <description>,
 * <parent><name>..</name></parent>, <creationTime>, <disks><disk name=
 * checkpoint='bitmap' bitmap= [size=]/> (checkpoint='no' disks: name and
 * checkpoint only)</disks>.  Indented with 2 spaces like virsh prints, with
 * a final newline.  Text escaped properly (bytes that are not valid UTF-8
 * or not allowed in XML become U+FFFD).  Returns a malloc'd string. */
char *meta_xml_format_checkpoint(const struct meta_xml_ckpt *c);
/* A <checkpoints> list wrapping several, oldest first. */
char *meta_xml_format_checkpoints(const struct meta_xml_ckpt *c, size_t n);
void meta_xml_ckpt_clear(struct meta_xml_ckpt *c);
/* Clears each of n and frees the array. */
void meta_xml_ckpts_free(struct meta_xml_ckpt *c, size_t n);
/* Field by field (NULL equals NULL; size only compared when has_size). */
bool meta_xml_ckpt_equal(const struct meta_xml_ckpt *a, const struct meta_xml_ckpt *b);

/* --- xml.c: backups --- */
enum meta_xml_backupmode {
    META_XML_BACKUPMODE_DEFAULT = 0,    /* no backupmode= */
    META_XML_BACKUPMODE_FULL,
    META_XML_BACKUPMODE_INCREMENTAL,
};
struct meta_xml_backup_disk {
    char *name; bool backup;             /* backup='yes'|'no' (default yes) */
    char *exportname, *exportbitmap;     /* NULL when absent (pull only) */
    char *scratch;                       /* <scratch file=...>, NULL when absent */
    /* Parsed so that callers can refuse what they do not support rather
     * than silently ignore it.  All stay 0/NULL when backup is false. */
    bool block;            /* type='block': <scratch dev=> / <target dev=> */
    char *target;          /* push: <target file=|dev=>, NULL when absent */
    char *driver;          /* <driver type=>, NULL when absent */
    enum meta_xml_backupmode backupmode;
    char *incremental;     /* per-disk incremental= (with backupmode) */
    bool encryption;       /* <scratch>/<target> holds an <encryption> */
};
struct meta_xml_backup {
    bool pull;                           /* mode='pull' vs 'push' (libvirt's default) */
    char *incremental;                   /* <incremental> */
    char *transport;                     /* "unix" | "tcp" | NULL (no <server>) */
    char *socket, *host, *port;          /* per transport; port normalized, NULL for none/0 */
    bool tls;                            /* tls='yes' */
    struct meta_xml_backup_disk *disks; size_t ndisks;
};
/* <domainbackup>.  mode absent means push, as in libvirt; <server> only in
 * pull mode; transport 'tcp' (default: needs name=, optional port=) or
 * 'unix' (needs an absolute socket=); disks not repeated.  Returns 0 or -1
 * (InvalidParameter, *out left empty). */
int meta_xml_parse_backup(const char *xml, size_t len, struct meta_xml_backup *out,
                          struct ckpt_error *e);
/* As libvirt's backup-dumpxml prints a running pull job: mode, <incremental>,
 * <server .../>, <disks><disk name= backup='yes' type='file' exportname=
 * exportbitmap=><scratch file=/></disk>. */
char *meta_xml_format_backup(const struct meta_xml_backup *b);
void meta_xml_backup_clear(struct meta_xml_backup *b);
/* Field by field, except `encryption`, which the formatter cannot write
 * back (ckptd has no encrypted scratch: callers refuse it). */
bool meta_xml_backup_equal(const struct meta_xml_backup *a, const struct meta_xml_backup *b);

/* --- xml.c: disks named by their source file --- */
struct meta_tree;
/* libvirt names a disk of <disks> by its target ("vda") or by its source
 * file ("/images/vm1.qcow2"; libvirt's virDomainDiskByName).  These turn a
 * name that is an absolute path equal to one of vm's disks' filename (as
 * query-disks reports it) into that disk's name, then refuse a disk given
 * twice (once by each name).  A path no disk has is left as written, for
 * the caller's "no such disk".  vm NULL: nothing changes.  0 or -1
 * (InvalidParameter). */
int meta_xml_ckpt_resolve_disks(struct meta_xml_ckpt *c, const struct meta_tree *vm,
                                struct ckpt_error *e);
int meta_xml_backup_resolve_disks(struct meta_xml_backup *b, const struct meta_tree *vm,
                                  struct ckpt_error *e);
/* The parsers above followed by the resolving above: what the agent calls
 * with its tree, so that a path names a disk as it does for libvirt. */
int meta_xml_parse_checkpoint_vm(const char *xml, size_t len, const struct meta_tree *vm,
                                 struct meta_xml_ckpt *out, struct ckpt_error *e);
int meta_xml_parse_checkpoints_vm(const char *xml, size_t len, const struct meta_tree *vm,
                                  struct meta_xml_ckpt **out, size_t *n,
                                  struct ckpt_error *e);
int meta_xml_parse_backup_vm(const char *xml, size_t len, const struct meta_tree *vm,
                             struct meta_xml_backup *out, struct ckpt_error *e);

#endif
