/* agent/qemu-caps.c: what query-qmp-schema's answer offers.  The schema
 * names types by numbers; commands, union cases and members by name. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent/agent.h"

/* A schema shaped like QEMU's: blockdev-add's boxed BlockdevOptions
 * union ("10"), its copy-before-write case ("12") with the members
 * given, and the snapshot-access case when wanted. */
static json_t *
schema(const char *cbw_members, bool snapshot_access, bool graph)
{
    char *text = xasprintf(
        "[{\"name\": \"blockdev-add\", \"meta-type\": \"command\", \"arg-type\": \"10\","
        "  \"ret-type\": \"0\"},"
        " {\"name\": \"10\", \"meta-type\": \"object\", \"tag\": \"driver\","
        "  \"members\": [{\"name\": \"driver\", \"type\": \"11\"}],"
        "  \"variants\": [{\"case\": \"qcow2\", \"type\": \"14\"},"
        "                {\"case\": \"copy-before-write\", \"type\": \"12\"}%s]},"
        " {\"name\": \"12\", \"meta-type\": \"object\", \"members\": [%s]},"
        " {\"name\": \"13\", \"meta-type\": \"object\", \"members\": []},"
        " {\"name\": \"14\", \"meta-type\": \"object\","
        "  \"members\": [{\"name\": \"on-cbw-error\", \"type\": \"str\"}]},"
        " {\"name\": \"qom-set\", \"meta-type\": \"command\"}%s]",
        snapshot_access ? ", {\"case\": \"snapshot-access\", \"type\": \"13\"}" : "",
        cbw_members,
        graph ? ", {\"name\": \"x-debug-query-block-graph\", \"meta-type\": \"command\"}"
              : "");
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    free(text);
    assert_non_null(j);
    return j;
}

#define CBW_72 "{\"name\": \"file\", \"type\": \"str\"}, " \
               "{\"name\": \"on-cbw-error\", \"type\": \"15\"}, " \
               "{\"name\": \"cbw-timeout\", \"type\": \"int\"}"

static void
test_qemu_72(void **state)
{
    struct qemu_caps c = { 0 };
    json_t *s = schema(CBW_72, true, true);
    caps_from_schema(&c, s);
    json_decref(s);
    assert_true(c.cbw_break && c.cbw_timeout && c.snapshot_access && c.qom_set &&
                c.block_graph);
    assert_false(c.cbw_min_cluster);
}

static void
test_qemu_10(void **state)
{
    struct qemu_caps c = { 0 };
    json_t *s = schema(CBW_72 ", {\"name\": \"min-cluster-size\", \"type\": \"int\"}",
                       true, true);
    caps_from_schema(&c, s);
    json_decref(s);
    assert_true(c.cbw_break && c.cbw_min_cluster && c.snapshot_access);
}

/* on-cbw-error as a member of another driver's options does not count. */
static void
test_no_on_cbw_error(void **state)
{
    struct qemu_caps c = { 0 };
    json_t *s = schema("{\"name\": \"file\", \"type\": \"str\"}", true, true);
    caps_from_schema(&c, s);
    json_decref(s);
    assert_false(c.cbw_break);
    assert_true(c.snapshot_access);
}

static void
test_no_snapshot_access_no_graph(void **state)
{
    struct qemu_caps c = { 0 };
    json_t *s = schema(CBW_72, false, false);
    caps_from_schema(&c, s);
    json_decref(s);
    assert_true(c.cbw_break);
    assert_false(c.snapshot_access || c.block_graph);
}

/* Nothing usable: an empty list, an object, null. */
static void
test_garbage(void **state)
{
    json_t *v[] = { json_array(), json_object(), json_null() };
    for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
        struct qemu_caps c = { .cbw_break = true, .cbw_timeout = true, .cbw_min_cluster = true,
                               .snapshot_access = true, .qom_set = true, .block_graph = true };
        caps_from_schema(&c, v[i]);
        assert_false(c.cbw_break || c.cbw_timeout || c.cbw_min_cluster ||
                     c.snapshot_access || c.qom_set || c.block_graph);
        json_decref(v[i]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qemu_72),
        cmocka_unit_test(test_qemu_10),
        cmocka_unit_test(test_no_on_cbw_error),
        cmocka_unit_test(test_no_snapshot_access_no_graph),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
