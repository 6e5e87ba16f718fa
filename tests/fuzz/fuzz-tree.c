/* libFuzzer harness: what QEMU reports, read as the checkpoint tree.
 * The input is JSON: [query-block return, query-named-block-nodes return].
 * A hostile or broken QEMU (or image with odd bitmap names) must not crash
 * the tree builder, the record decoder or the plans built on the tree. */
#include "bitmap/plan.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
        quiet = true;
    }
    json_t *j = json_loadb((const char *) data, size, 0, NULL);
    struct meta_tree t;
    struct ckpt_error e = { 0 };
    if (j && meta_tree_build(json_array_get(j, 0), json_array_get(j, 1), &t, &e) == 0) {
        json_t *actions = json_array();
        struct ckpt_create_req r = { .name = "fuzz", .now = 1 };
        ckpt_plan_create(&t, &r, actions, &e);
        struct str_vec deleted = { 0 };
        for (size_t i = 0; i < t.nckpts; i++)
            ckpt_plan_delete(&t, t.ckpts[i].rec.name, (enum ckpt_delete_mode) (i % 3),
                             actions, &deleted, &e);
        str_vec_free_all(&deleted);
        json_decref(actions);
        meta_tree_free(&t);
    }
    json_decref(j);
    return 0;
}
