/* strbuf.h - a growable, always NUL-terminated text buffer, and the UTF-8 helpers text
 * layout needs (display width, a bounded copy that keeps whole characters).
 *
 * A zeroed Strbuf ({0}) is an empty buffer: s is NULL until the first append, then a
 * NUL-terminated string of len bytes that the Strbuf owns. Appends never fail (out of
 * memory exits, as xrealloc does); sb_free releases the text and leaves an empty buffer,
 * ready for reuse. Code that wants the text after the buffer is gone takes s and does not
 * call sb_free (the caller then frees s). */
#ifndef UPCYCLE_UTIL_STRBUF_H
#define UPCYCLE_UTIL_STRBUF_H

#include <stddef.h>

typedef struct {
    char *s;    /* NULL while empty, else NUL-terminated */
    size_t len; /* bytes before the NUL */
    size_t cap; /* bytes allocated */
} Strbuf;

void sb_put(Strbuf *b, const char *s);                /* s must not be NULL */
void sb_putn(Strbuf *b, const char *s, size_t n);     /* n bytes of s (may hold NULs) */
void sb_printf(Strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s escaped for HTML/XML text and attribute values (& < > " '); NULL appends nothing */
void sb_put_escaped(Strbuf *b, const char *s);
void sb_free(Strbuf *b);

/* display width of UTF-8 text: the number of code points (no East Asian wide forms) */
int utf8_width(const char *s);
/* strlen(src) < n ? a copy : the longest prefix of whole UTF-8 characters that fits; dst is
 * always NUL-terminated (n >= 1) */
void utf8_copy(char *dst, size_t n, const char *src);

#endif
