/* ckptd: small helpers every module uses.
 *
 * common.c: logging (level and format are set once by main, before the
 *           loop starts; they are configuration, not state).
 * utf8.c:   utf8_*     checking, cutting and repairing UTF-8 text, and
 *           ckpt_vformat, the one formatter of texts that leave the agent
 * vector:   DEFINE_VECTOR gives a typed growable array.
 * cleanup:  CLEANUP_* attributes free locals on every return path.
 */
#ifndef CKPTD_COMMON_H
#define CKPTD_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <jansson.h>

#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))

/* --- common.c --- */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
void log_setup(enum log_level level, enum log_format format);
int log_level_parse(const char *s, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Allocation failure is not recoverable in a 1 MiB agent: abort loudly. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- cleanup attributes --- */
static inline void cleanup_free(void *p) { free(*(void **)p); }
static inline void cleanup_json(json_t **j) { json_decref(*j); }
#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))
#define CLEANUP_JSON __attribute__((cleanup(cleanup_json)))

/* --- typed vectors ---
 * DEFINE_VECTOR(str_vec, char *) declares struct str_vec { char **ptr;
 * size_t len, cap; } and str_vec_append/_remove/_reset.  The functions are
 * marked unused: clang warns about an unused static inline function when
 * the vector is defined in a .c file rather than a header. */
#define VECTOR_FN static inline __attribute__((unused))
#define DEFINE_VECTOR(name, type)                                           \
    struct name { type *ptr; size_t len, cap; };                            \
    VECTOR_FN void name##_append(struct name *v, type elem)                 \
    {                                                                       \
        if (v->len == v->cap) {                                             \
            v->cap = v->cap ? v->cap * 2 : 8;                               \
            v->ptr = xrealloc(v->ptr, v->cap * sizeof (type));              \
        }                                                                   \
        v->ptr[v->len++] = elem;                                            \
    }                                                                       \
    VECTOR_FN void name##_remove(struct name *v, size_t i)                  \
    {                                                                       \
        memmove(&v->ptr[i], &v->ptr[i + 1], (v->len - i - 1) * sizeof (type)); \
        v->len--;                                                           \
    }                                                                       \
    VECTOR_FN void name##_reset(struct name *v)                             \
    {                                                                       \
        free(v->ptr);                                                       \
        v->ptr = NULL;                                                      \
        v->len = v->cap = 0;                                                \
    }

DEFINE_VECTOR(str_vec, char *)
void str_vec_free_all(struct str_vec *v);   /* frees each string, then the array */

/* --- unlink.c --- */
/* Removes path's name now and its blocks in a background thread (a
 * multi-gigabyte unlink would stall the loop).  0, or -1 with errno. */
int unlink_later(const char *path);
/* Waits for every unlink_later still freeing blocks (at exit). */
void unlink_wait(void);
/* The dot name a file has while its blocks are freed, and the test for
 * one (original: the name it had).  For the start-up sweep. */
char *unlink_trash_name(const char *path);
bool unlink_is_trash(const char *leaf, const char **original);



/* --- error classes of the control protocol (PROTOCOL.md) --- */
enum ckpt_err {
    CKPT_OK = 0,
    CKPT_ERR_COMMAND_NOT_FOUND,
    CKPT_ERR_INVALID_PARAMETER,
    CKPT_ERR_NOT_FOUND,
    CKPT_ERR_ALREADY_EXISTS,
    CKPT_ERR_BUSY,
    CKPT_ERR_UNSUPPORTED,
    CKPT_ERR_INCONSISTENT,
    CKPT_ERR_NOT_CONNECTED,
    CKPT_ERR_QEMU,
    CKPT_ERR_GENERIC,
    CKPT_ERR_GUEST_AGENT,       /* the guest agent refused or failed */
};
const char *ckpt_err_class(enum ckpt_err e);

/* --- utf8.c --- */
/* Length of the longest valid UTF-8 prefix of s[0, len) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
size_t utf8_valid_prefix(const char *s, size_t len);
static inline bool utf8_valid(const char *s, size_t len)
{
    return utf8_valid_prefix(s, len) == len;
}
/* --- fdpass.c --- */
/* send(2) of data[0, len) with fd attached to its first byte (SCM_RIGHTS;
 * none when fd < 0), MSG_NOSIGNAL. */
ssize_t fd_send(int sock, const void *data, size_t len, int fd);

/* Cuts the string s to at most max bytes without splitting a character. */
void utf8_truncate(char *s, size_t max);
/* Replaces, in place, each byte of s that is not part of a valid UTF-8
 * character with '?'. */
void utf8_repair(char *s);
/* vsnprintf into buf[size], but the result is always valid UTF-8: a text
 * too long is cut at a character boundary and ends in "..."; bytes that
 * are not UTF-8 (a name cut with "%.200s") become '?'.  Every error text
 * and log line is built here, so none can be refused by the JSON encoder. */
void ckpt_vformat(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
void ckpt_format(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A failure on its way up: the class and one sentence naming the object. */
struct ckpt_error {
    enum ckpt_err code;
    char msg[512];
};
enum ckpt_err ckpt_fail(struct ckpt_error *e, enum ckpt_err code,
                        const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#endif
