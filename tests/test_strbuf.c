/* test_strbuf.c - the text buffer (util/strbuf.h): appends, growth past the first block,
 * escaping, and the UTF-8 helpers. */
#include <string.h>

#include "test.h"
#include "util/strbuf.h"

TEST(strbuf_appends_grow_and_stay_terminated) {
    Strbuf b = {0};
    CHECK(b.s == NULL && b.len == 0);
    sb_put(&b, "abc");
    sb_putn(&b, "defgh", 2);
    sb_printf(&b, "-%d-%s", 42, "x");
    CHECK(b.s && strcmp(b.s, "abcde-42-x") == 0 && b.len == 10);
    for (int i = 0; i < 3000; i++) sb_printf(&b, "%04d", i); /* past the first 4 KiB block */
    CHECK(b.len == 10 + 4 * 3000 && strlen(b.s) == b.len && b.cap > b.len);
    CHECK(strncmp(b.s + 10, "000000010002", 12) == 0 && strcmp(b.s + b.len - 4, "2999") == 0);
    sb_printf(&b, "%s", ""); /* an empty append changes nothing */
    CHECK(b.len == 10 + 4 * 3000);
    sb_free(&b);
    CHECK(b.s == NULL && b.len == 0 && b.cap == 0);
    sb_put(&b, "again"); /* reusable after sb_free */
    CHECK(strcmp(b.s, "again") == 0);
    sb_free(&b);
}

TEST(strbuf_escapes_html_and_xml_specials) {
    Strbuf b = {0};
    sb_put_escaped(&b, "a<b> & \"c\" 'd' \xe2\x80\x94");
    CHECK(b.s && strcmp(b.s, "a&lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; \xe2\x80\x94") == 0);
    sb_put_escaped(&b, NULL); /* nothing */
    CHECK(strcmp(b.s + b.len - 3, "\xe2\x80\x94") == 0);
    sb_free(&b);
}

TEST(strbuf_utf8_width_and_copy_keep_whole_characters) {
    CHECK(utf8_width("") == 0);
    CHECK(utf8_width("abc") == 3);
    CHECK(utf8_width("\xe2\x80\x94 \xc2\xb1") == 3); /* "— ±" */
    char d[8];
    utf8_copy(d, sizeof d, "short");
    CHECK(strcmp(d, "short") == 0);
    utf8_copy(d, sizeof d, "abcdefgh"); /* 7 bytes fit */
    CHECK(strcmp(d, "abcdefg") == 0);
    utf8_copy(d, sizeof d, "abcde\xe2\x80\x94"); /* the dash would be cut after its first byte: dropped */
    CHECK(strcmp(d, "abcde") == 0);
    utf8_copy(d, 6, "ab\xe2\x80\x94"); /* exactly fits: 5 bytes */
    CHECK(strcmp(d, "ab\xe2\x80\x94") == 0);
    utf8_copy(d, 1, "abc");
    CHECK(d[0] == 0);
}
