/* common/unlink.c: a file's name goes at once, its blocks later, and a
 * file with another name keeps its data under that name. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"

#define DATA_LEN (4u << 20)

static char *
make_dir(void)
{
    char tmpl[] = "/tmp/ckptd-unlink-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return xstrdup(tmpl);
}

static void
write_file(const char *path, unsigned char byte)
{
    unsigned char *buf = xmalloc(DATA_LEN);
    memset(buf, byte, DATA_LEN);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, DATA_LEN), DATA_LEN);
    assert_int_equal(close(fd), 0);
    free(buf);
}

/* Entries of dir other than . and .. */
static int
entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    assert_non_null(d);
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Gone from the directory when unlink_later returns: no name, not even a
 * dot name, while its blocks are still being freed. */
static void
test_name_goes_at_once(void **state)
{
    char *dir = make_dir();
    char *path = xasprintf("%s/scratch.qcow2", dir);
    write_file(path, 0x5a);
    assert_int_equal(unlink_later(path), 0);
    assert_int_equal(entries(dir), 0);
    unlink_wait();
    assert_int_equal(entries(dir), 0);
    assert_int_equal(rmdir(dir), 0);
    free(path);
    free(dir);
}

/* A finished push target is linked to its final name before the partial
 * name goes: the final one keeps every byte. */
static void
test_other_name_keeps_data(void **state)
{
    char *dir = make_dir();
    char *partial = xasprintf("%s/partial", dir), *final = xasprintf("%s/final", dir);
    write_file(partial, 0xa5);
    assert_int_equal(link(partial, final), 0);
    assert_int_equal(unlink_later(partial), 0);
    unlink_wait();
    struct stat st;
    assert_int_equal(stat(partial, &st), -1);
    assert_int_equal(stat(final, &st), 0);
    assert_int_equal((long long) st.st_size, (long long) DATA_LEN);
    unsigned char *buf = xmalloc(DATA_LEN);
    int fd = open(final, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, DATA_LEN), DATA_LEN);
    close(fd);
    for (size_t i = 0; i < DATA_LEN; i += 4096)
        assert_int_equal(buf[i], 0xa5);
    free(buf);
    assert_int_equal(unlink(final), 0);
    assert_int_equal(rmdir(dir), 0);
    free(partial);
    free(final);
    free(dir);
}

static void
test_missing(void **state)
{
    errno = 0;
    assert_int_equal(unlink_later("/tmp/ckptd-unlink-no-such-file"), -1);
    assert_int_equal(errno, ENOENT);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_goes_at_once),
        cmocka_unit_test(test_other_name_keeps_data),
        cmocka_unit_test(test_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
