/* test_json.c - the JSON field reader (util/json.h): every getter on a present, missing,
 * wrong-typed and null field; the message names the file and the field; loading errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"
#include "util/json.h"

static const char *DOC = "{\"n\": 2.5, \"i\": 7, \"neg\": -3, \"big\": 1e10, \"frac\": 2.5, \"huge\": 1e999, \"s\": \"text\","
                         " \"t\": true, \"f\": false, \"z\": null, \"o\": {\"lr\": 0.1}, \"a\": [1, null, \"x\", {}, [2]]}";

static cJSON *doc(void) {
    cJSON *j = json_parse(DOC, strlen(DOC), "doc.json", "a test document");
    CHECK_MSG(j != NULL, "%s", up_last_error());
    return j;
}

/* the last error is one line "doc.json: field <field>: ...; expected <expected>" */
static int error_is(const char *field, const char *expected) {
    const char *e = up_last_error();
    char want[256];
    snprintf(want, sizeof want, "doc.json: field %s: ", field);
    int ok = strncmp(e, want, strlen(want)) == 0 && strstr(e, "; expected ") != NULL && strstr(e, expected) != NULL &&
             strchr(e, '\n') == NULL;
    if (!ok) test_fail(__FILE__, __LINE__, "error '%s', expected '%s...; expected %s'", e, want, expected);
    up_clear_error();
    return ok;
}

TEST(json_required_getters_present) {
    cJSON *j = doc();
    double d = 0;
    int i = 0, b = -1;
    const char *s = NULL;
    const cJSON *o = NULL, *a = NULL;
    CHECK(json_get_number("doc.json", j, "n", &d) == 0 && d == 2.5);
    CHECK(json_get_number("doc.json", j, "i", &d) == 0 && d == 7);
    CHECK(json_get_int("doc.json", j, "i", &i) == 0 && i == 7);
    CHECK(json_get_int("doc.json", j, "neg", &i) == 0 && i == -3);
    CHECK(json_get_string("doc.json", j, "s", &s) == 0 && s && strcmp(s, "text") == 0);
    CHECK(json_get_bool("doc.json", j, "t", &b) == 0 && b == 1);
    CHECK(json_get_bool("doc.json", j, "f", &b) == 0 && b == 0);
    CHECK(json_get_object("doc.json", j, "o", &o) == 0 && cJSON_IsObject(o));
    CHECK(json_get_array("doc.json", j, "a", &a) == 0 && cJSON_GetArraySize(a) == 5);
    CHECK(json_get_number_or_null("doc.json", j, "n", &d) == 0 && d == 2.5);
    CHECK(json_get_number_or_null("doc.json", j, "z", &d) == 0 && isnan(d));
    /* a dotted name: the lookup uses the last part, the message the whole name */
    CHECK(json_get_number("doc.json", o, "o.lr", &d) == 0 && d == 0.1);
    cJSON_Delete(j);
}

TEST(json_required_getters_missing_wrong_type_and_null) {
    cJSON *j = doc();
    double d = 42;
    int i = 42;
    const char *s = "keep";
    const cJSON *o = j;
    /* missing */
    CHECK(json_get_number("doc.json", j, "nope", &d) == -1 && error_is("nope", "a number"));
    CHECK(json_get_int("doc.json", j, "nope", &i) == -1 && error_is("nope", "an integer"));
    CHECK(json_get_string("doc.json", j, "nope", &s) == -1 && error_is("nope", "a string"));
    CHECK(json_get_bool("doc.json", j, "nope", &i) == -1 && error_is("nope", "true or false"));
    CHECK(json_get_object("doc.json", j, "nope", &o) == -1 && error_is("nope", "an object"));
    CHECK(json_get_array("doc.json", j, "nope", &o) == -1 && error_is("nope", "an array"));
    CHECK(json_get_number_or_null("doc.json", j, "nope", &d) == -1 && error_is("nope", "a number or null"));
    CHECK(json_get_number("doc.json", j, "nope", &d) == -1 && strstr(up_last_error(), "missing"));
    up_clear_error();
    /* wrong type: the message says what it is */
    CHECK(json_get_number("doc.json", j, "s", &d) == -1 && strstr(up_last_error(), "is a string") && error_is("s", "a number"));
    CHECK(json_get_int("doc.json", j, "t", &i) == -1 && strstr(up_last_error(), "is true") && error_is("t", "an integer"));
    CHECK(json_get_string("doc.json", j, "n", &s) == -1 && strstr(up_last_error(), "is a number") && error_is("n", "a string"));
    CHECK(json_get_bool("doc.json", j, "i", &i) == -1 && error_is("i", "true or false")); /* 0/1 are not booleans */
    CHECK(json_get_object("doc.json", j, "a", &o) == -1 && strstr(up_last_error(), "is an array") && error_is("a", "an object"));
    CHECK(json_get_array("doc.json", j, "o", &o) == -1 && strstr(up_last_error(), "is an object") && error_is("o", "an array"));
    CHECK(json_get_number_or_null("doc.json", j, "s", &d) == -1 && error_is("s", "a number or null"));
    /* null: the wrong type for a required field */
    CHECK(json_get_number("doc.json", j, "z", &d) == -1 && strstr(up_last_error(), "is null") && error_is("z", "a number"));
    CHECK(json_get_string("doc.json", j, "z", &s) == -1 && error_is("z", "a string"));
    CHECK(json_get_object("doc.json", j, "z", &o) == -1 && error_is("z", "an object"));
    /* numbers: finite; integers: whole and within int */
    CHECK(json_get_number("doc.json", j, "huge", &d) == -1 && strstr(up_last_error(), "finite") && error_is("huge", "a number"));
    CHECK(json_get_number_or_null("doc.json", j, "huge", &d) == -1 && error_is("huge", "a number or null"));
    CHECK(json_get_int("doc.json", j, "frac", &i) == -1 && strstr(up_last_error(), "is 2.5") && error_is("frac", "an integer"));
    CHECK(json_get_int("doc.json", j, "big", &i) == -1 && strstr(up_last_error(), "out of range") && error_is("big", "an integer"));
    CHECK(json_get_int("doc.json", j, "huge", &i) == -1 && error_is("huge", "an integer"));
    /* *out is left alone on every error */
    CHECK(d == 42 && i == 42 && strcmp(s, "keep") == 0 && o == j);
    /* dotted names appear whole in the message */
    const cJSON *inner = cJSON_GetObjectItem(j, "o");
    CHECK(json_get_string("doc.json", inner, "o.lr", &s) == -1 && error_is("o.lr", "a string"));
    CHECK(json_get_int("doc.json", inner, "train.steps", &i) == -1 && error_is("train.steps", "an integer"));
    /* a NULL or non-object parent has no fields */
    CHECK(json_get_number("doc.json", NULL, "n", &d) == -1 && error_is("n", "a number"));
    CHECK(json_get_number("doc.json", cJSON_GetObjectItem(j, "a"), "n", &d) == -1 && error_is("n", "a number"));
    cJSON_Delete(j);
}

TEST(json_optional_getters_default_on_absent_or_null_error_on_wrong_type) {
    cJSON *j = doc();
    double d;
    int i;
    const char *s;
    const cJSON *o;
    /* present */
    CHECK(json_opt_number("doc.json", j, "n", 9, &d) == 0 && d == 2.5);
    CHECK(json_opt_int("doc.json", j, "i", 9, &i) == 0 && i == 7);
    CHECK(json_opt_string("doc.json", j, "s", "dflt", &s) == 0 && strcmp(s, "text") == 0);
    CHECK(json_opt_bool("doc.json", j, "f", 1, &i) == 0 && i == 0);
    CHECK(json_opt_object("doc.json", j, "o", &o) == 0 && cJSON_IsObject(o));
    CHECK(json_opt_array("doc.json", j, "a", &o) == 0 && cJSON_IsArray(o));
    /* absent: the default */
    CHECK(json_opt_number("doc.json", j, "nope", 9, &d) == 0 && d == 9);
    CHECK(json_opt_number("doc.json", j, "nope", NAN, &d) == 0 && isnan(d));
    CHECK(json_opt_int("doc.json", j, "nope", 9, &i) == 0 && i == 9);
    CHECK(json_opt_string("doc.json", j, "nope", "dflt", &s) == 0 && strcmp(s, "dflt") == 0);
    CHECK(json_opt_string("doc.json", j, "nope", NULL, &s) == 0 && s == NULL);
    CHECK(json_opt_bool("doc.json", j, "nope", 1, &i) == 0 && i == 1);
    CHECK(json_opt_object("doc.json", j, "nope", &o) == 0 && o == NULL);
    CHECK(json_opt_array("doc.json", j, "nope", &o) == 0 && o == NULL);
    CHECK(json_opt_int("doc.json", NULL, "i", 5, &i) == 0 && i == 5); /* an absent parent */
    /* null: the default too */
    CHECK(json_opt_number("doc.json", j, "z", 9, &d) == 0 && d == 9);
    CHECK(json_opt_int("doc.json", j, "z", 9, &i) == 0 && i == 9);
    CHECK(json_opt_string("doc.json", j, "z", "dflt", &s) == 0 && strcmp(s, "dflt") == 0);
    CHECK(json_opt_bool("doc.json", j, "z", 0, &i) == 0 && i == 0);
    CHECK(json_opt_object("doc.json", j, "z", &o) == 0 && o == NULL);
    CHECK(json_opt_array("doc.json", j, "z", &o) == 0 && o == NULL);
    /* present with the wrong type: an error naming file and field */
    d = 1, i = 1, s = "keep", o = j;
    CHECK(json_opt_number("doc.json", j, "s", 9, &d) == -1 && error_is("s", "a number"));
    CHECK(json_opt_number("doc.json", j, "huge", 9, &d) == -1 && error_is("huge", "a number"));
    CHECK(json_opt_int("doc.json", j, "frac", 9, &i) == -1 && error_is("frac", "an integer"));
    CHECK(json_opt_int("doc.json", j, "t", 9, &i) == -1 && error_is("t", "an integer"));
    CHECK(json_opt_string("doc.json", j, "i", "dflt", &s) == -1 && error_is("i", "a string"));
    CHECK(json_opt_bool("doc.json", j, "i", 0, &i) == -1 && error_is("i", "true or false"));
    CHECK(json_opt_object("doc.json", j, "s", &o) == -1 && error_is("s", "an object"));
    CHECK(json_opt_array("doc.json", j, "o", &o) == -1 && error_is("o", "an array"));
    CHECK(json_opt_bool("doc.json", cJSON_GetObjectItem(j, "o"), "train.lr", 0, &i) == -1 && error_is("train.lr", "true or false"));
    CHECK(d == 1 && i == 1 && strcmp(s, "keep") == 0 && o == j);
    cJSON_Delete(j);
}

TEST(json_array_elements) {
    cJSON *j = doc();
    const cJSON *a = cJSON_GetObjectItem(j, "a"), *o;
    double d = 7;
    int i = 7;
    const char *s;
    CHECK(json_elem_number("doc.json", a, "a", 0, &d) == 0 && d == 1);
    CHECK(json_elem_int("doc.json", a, "a", 0, &i) == 0 && i == 1);
    CHECK(json_elem_number_or_null("doc.json", a, "a", 1, &d) == 0 && isnan(d));
    CHECK(json_elem_string("doc.json", a, "a", 2, &s) == 0 && strcmp(s, "x") == 0);
    CHECK(json_elem_object("doc.json", a, "a", 3, &o) == 0 && cJSON_IsObject(o));
    CHECK(json_elem_array("doc.json", a, "a", 4, &o) == 0 && cJSON_GetArraySize(o) == 1);
    /* null, wrong type, past the end: "<name>[i]" in the message */
    CHECK(json_elem_number("doc.json", a, "a", 1, &d) == -1 && error_is("a[1]", "a number"));
    CHECK(json_elem_number_or_null("doc.json", a, "sweeps.main.a", 2, &d) == -1 && error_is("sweeps.main.a[2]", "a number or null"));
    CHECK(json_elem_int("doc.json", a, "a", 2, &i) == -1 && error_is("a[2]", "an integer"));
    CHECK(json_elem_string("doc.json", a, "a", 0, &s) == -1 && error_is("a[0]", "a string"));
    CHECK(json_elem_object("doc.json", a, "a", 4, &o) == -1 && error_is("a[4]", "an object"));
    CHECK(json_elem_array("doc.json", a, "a", 3, &o) == -1 && error_is("a[3]", "an array"));
    CHECK(json_elem_number("doc.json", a, "a", 5, &d) == -1 && strstr(up_last_error(), "missing") && error_is("a[5]", "a number"));
    CHECK(json_elem_number("doc.json", a, "a", -1, &d) == -1 && error_is("a[-1]", "a number"));
    CHECK(json_elem_number("doc.json", NULL, "a", 0, &d) == -1 && error_is("a[0]", "a number"));
    cJSON_Delete(j);
}

TEST(json_has_counts_null_as_present) {
    cJSON *j = doc();
    CHECK(json_has(j, "z") && json_has(j, "n") && !json_has(j, "nope"));
    CHECK(json_has(cJSON_GetObjectItem(j, "o"), "train.lr")); /* dotted: the last part */
    CHECK(!json_has(NULL, "n") && !json_has(cJSON_GetObjectItem(j, "a"), "n"));
    cJSON_Delete(j);
}

TEST(json_load_file_errors_name_the_file) {
    char *dir = xstrdup(test_tmpdir());
    char *ok = path_join(dir, "ok.json"), *bad = path_join(dir, "bad.json"), *arr = path_join(dir, "arr.json"),
         *none = path_join(dir, "none.json"), *empty = path_join(dir, "empty.json");
    const char *bad_text = "{\n  \"a\": 1,\n  \"b\": ,\n}";
    CHECK(atomic_write_file(ok, "{\"k\": [1]}", 10) == 0);
    CHECK(atomic_write_file(bad, bad_text, strlen(bad_text)) == 0);
    CHECK(atomic_write_file(arr, "[1, 2]", 6) == 0);
    CHECK(atomic_write_file(empty, "", 0) == 0);
    cJSON *j = json_load_file(ok, "a test file");
    CHECK(j && cJSON_IsArray(cJSON_GetObjectItem(j, "k")));
    cJSON_Delete(j);
    up_clear_error();
    CHECK(json_load_file(bad, "a test file") == NULL);
    CHECK_MSG(strstr(up_last_error(), bad) && strstr(up_last_error(), "invalid JSON (parse error near line 3)") &&
                  strstr(up_last_error(), "; expected a test file"),
              "%s", up_last_error());
    CHECK(json_load_file(empty, "a test file") == NULL && strstr(up_last_error(), empty) && strstr(up_last_error(), "invalid JSON"));
    CHECK(json_load_file(arr, "a test file") == NULL);
    CHECK_MSG(strstr(up_last_error(), arr) && strstr(up_last_error(), "not a JSON object; expected a test file"), "%s", up_last_error());
    CHECK(json_load_file(none, "a test file") == NULL && strstr(up_last_error(), none) && strstr(up_last_error(), "cannot open"));
    CHECK(json_load_file(dir, "a test file") == NULL && strstr(up_last_error(), dir)); /* a directory */
    /* text that is not a file: the origin is named */
    CHECK(json_parse("{", 1, "preset demo", "an experiment plan") == NULL && strstr(up_last_error(), "preset demo: invalid JSON"));
    j = json_parse("{\"a\": 1} trailing", 17, "x", "y"); /* like cJSON_Parse: what follows the object is ignored */
    CHECK(j != NULL);
    cJSON_Delete(j);
    free(dir), free(ok), free(bad), free(arr), free(none), free(empty);
}

/* streamed grow's config.json edit: only the top-level key's number changes, every other byte
 * (float literals, nested keys of the same name, spacing) stays */
TEST(json_text_set_top_int_changes_only_that_number) {
    const char *text = "{\n  \"sub\": {\"num_experts\": 3},\n  \"clip_qkv\": 2.0,\n  \"num_experts\" :  8,\n  \"x\": \"num_experts\"\n}\n";
    char *out = json_text_set_top_int(text, strlen(text), "num_experts", 16);
    CHECK(out && !strcmp(out, "{\n  \"sub\": {\"num_experts\": 3},\n  \"clip_qkv\": 2.0,\n  \"num_experts\" :  16,\n  \"x\": \"num_experts\"\n}\n"));
    free(out);
    CHECK(json_text_set_top_int(text, strlen(text), "num_local_experts", 16) == NULL); /* absent */
    const char *str = "{\"num_experts\": \"8\"}";
    CHECK(json_text_set_top_int(str, strlen(str), "num_experts", 16) == NULL); /* not a number */
    const char *esc = "{\"a\\\"num_experts\": 1, \"num_experts\": 4}";
    out = json_text_set_top_int(esc, strlen(esc), "num_experts", 8);
    CHECK(out && !strcmp(out, "{\"a\\\"num_experts\": 1, \"num_experts\": 8}"));
    free(out);
}
