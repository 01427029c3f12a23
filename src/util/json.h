/* json.h - reading JSON files and their fields, on top of cJSON, with one rule:
 *
 *   a field the caller requires that is missing, or any field present with the wrong type,
 *   is an error: the getter returns -1 with up_error("<file>: field <name>: <what is wrong>;
 *   expected <what>") and leaves *out unchanged. On success it returns 0.
 *
 * - json_get_*: the field is required; null counts as the wrong type.
 * - json_opt_*: absent or null leaves *out = dflt (writers put null for "no value"); any
 *   other type is an error, so a mistyped value is never silently ignored.
 * - json_get_number_or_null: required, and null is a value: NAN. For statistics that can be
 *   undefined (cJSON writes a NaN as null), as in results.json.
 * - json_elem_*: element i of an array, by the same rules as json_get_* (past the end is
 *   missing); messages name it "<name>[i]".
 * - Numbers are finite doubles (a literal cJSON reads as +-inf is out of range); integers
 *   are whole numbers within int; booleans are true or false (not 0 or 1).
 * - name is the field's key, optionally preceded by the path of the object that holds it
 *   ("train.lr", "sweeps.main.tau"): messages print the whole name, the lookup uses what
 *   follows the last '.'.
 * - obj that is NULL or not an object has no fields: an absent parent reads as absent, so
 *   check a parent's type where it is read (json_get_object / json_opt_object).
 * - file is what a message names first: a path, or an origin such as "preset demo".
 *
 * Ownership: json_load_file and json_parse return a tree the caller frees with
 * cJSON_Delete; strings, objects and arrays from the getters point into that tree. */
#ifndef UPCYCLE_UTIL_JSON_H
#define UPCYCLE_UTIL_JSON_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stddef.h>

/* The JSON object in a file, or NULL with up_error naming the file: unreadable (read_file's
 * message), "invalid JSON (parse error near line N); expected <expected>" or "top level is not
 * a JSON object; expected <expected>". expected: "an experiment plan", ... */
cJSON *json_load_file(const char *path, const char *expected);
/* the same for text that is not read from a file (n bytes; origin names it in messages) */
cJSON *json_parse(const char *text, size_t n, const char *origin, const char *expected);

/* 1 when obj has the field, whatever its value (null included) */
int json_has(const cJSON *obj, const char *name);

/* ---- required ---- */
int json_get_number(const char *file, const cJSON *obj, const char *name, double *out);
int json_get_int(const char *file, const cJSON *obj, const char *name, int *out);
int json_get_string(const char *file, const cJSON *obj, const char *name, const char **out);
int json_get_bool(const char *file, const cJSON *obj, const char *name, int *out);
int json_get_object(const char *file, const cJSON *obj, const char *name, const cJSON **out);
int json_get_array(const char *file, const cJSON *obj, const char *name, const cJSON **out);
int json_get_number_or_null(const char *file, const cJSON *obj, const char *name, double *out); /* null: NAN */

/* ---- optional: absent or null gives dflt (NULL for objects and arrays) ---- */
int json_opt_number(const char *file, const cJSON *obj, const char *name, double dflt, double *out);
int json_opt_int(const char *file, const cJSON *obj, const char *name, int dflt, int *out);
int json_opt_string(const char *file, const cJSON *obj, const char *name, const char *dflt, const char **out);
int json_opt_bool(const char *file, const cJSON *obj, const char *name, int dflt, int *out);
int json_opt_object(const char *file, const cJSON *obj, const char *name, const cJSON **out);
int json_opt_array(const char *file, const cJSON *obj, const char *name, const cJSON **out);

/* ---- array elements (arr: an array; name: the array's name, for messages) ---- */
int json_elem_number(const char *file, const cJSON *arr, const char *name, int i, double *out);
int json_elem_number_or_null(const char *file, const cJSON *arr, const char *name, int i, double *out);
int json_elem_int(const char *file, const cJSON *arr, const char *name, int i, int *out);
/* arr, a JSON array of token ids, into out (cJSON_GetArraySize(arr) entries): each a whole
 * number in [0, vocab); else up_error "<file>: field <name>[i] is ...; expected ..." */
int json_token_ids(const char *file, const cJSON *arr, const char *name, int vocab, int32_t *out);
/* text (n bytes, a JSON object) with the number value of its top-level key replaced by value,
 * every other byte as it was (float literals such as 2.0 stay floats: transformers 5's strict
 * config fields refuse 2 for a float); malloc'd, NULL when the key has no number value there */
char *json_text_set_top_int(const char *text, size_t n, const char *key, long long value);
int json_elem_string(const char *file, const cJSON *arr, const char *name, int i, const char **out);
int json_elem_object(const char *file, const cJSON *arr, const char *name, int i, const cJSON **out);
int json_elem_array(const char *file, const cJSON *arr, const char *name, int i, const cJSON **out);

#endif
