/* ckptd: checkpoint changes as data.  Each plan takes the current tree and
 * a request and returns the QMP `transaction` actions that make the change
 * on every disk at once, or an error naming the object.  Pure: no I/O.
 *
 * plan-create.c: ckpt_plan_create
 * plan-delete.c: ckpt_plan_delete
 * plan-redefine.c: ckpt_plan_redefine
 */
#ifndef CKPTD_BITMAP_PLAN_H
#define CKPTD_BITMAP_PLAN_H

#include "metadata/metadata.h"

struct ckpt_create_req {
    const char *name;
    const char *description;    /* NULL: none */
    int64_t now;                /* creation time, seconds */
    const char *const *disks;   /* NULL: every disk that can hold checkpoints */
    size_t ndisks;
};

/* Adds the actions for a new checkpoint to `actions` (a JSON array): on
 * each member disk, disable the bitmap that records now and add the new
 * data bitmap (recording) and its record.  On error, actions is unchanged. */
enum ckpt_err ckpt_plan_create(const struct meta_tree *t,
                               const struct ckpt_create_req *r,
                               json_t *actions, struct ckpt_error *e);

enum ckpt_delete_mode {
    CKPT_DELETE_ONE,            /* just this checkpoint */
    CKPT_DELETE_CHILDREN,       /* it and every descendant */
    CKPT_DELETE_CHILDREN_ONLY,  /* its descendants only */
};

/* Adds the actions that delete the checkpoint `name` (and/or descendants)
 * while every surviving checkpoint keeps covering every write since it:
 * deleted bitmaps are merged into the nearest survivor on the same disk,
 * which records again if it became the newest.  The names deleted, oldest
 * first, are appended to `deleted`. */
enum ckpt_err ckpt_plan_delete(const struct meta_tree *t, const char *name,
                               enum ckpt_delete_mode mode, json_t *actions,
                               struct str_vec *deleted, struct ckpt_error *e);

/* --- plan-redefine.c --- */
struct meta_xml_ckpt;
/* Records for checkpoints whose bitmaps exist already (libvirt's, say),
 * appended to the chain in parent order; older bitmaps that still record
 * are disabled.  Validates everything first: on error nothing is planned. */
enum ckpt_err ckpt_plan_redefine(const struct meta_tree *t,
                                 const struct meta_xml_ckpt *list, size_t n,
                                 int64_t now, json_t *actions, struct ckpt_error *e);

/* The inverse, for handing the images back to libvirt: every checkpoint's
 * bitmap made to cover every write since it and recording, records gone. */
enum ckpt_err ckpt_plan_release(const struct meta_tree *t, json_t *actions,
                                struct ckpt_error *e);

#endif
