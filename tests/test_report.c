/* test_report.c - the report generator: HTML (well-formed, self-contained, the table values
 * and undefined reasons present, no nan/inf), CSV, text tables, error paths, sparse input. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/report.h"
#include "test.h"
#include "util.h"

#define DASH_UTF8 "\xe2\x80\x94"

static char *sample_path(void) {
    if (path_exists("tests/fixtures/results_sample.json")) return xstrdup("tests/fixtures/results_sample.json");
    char *dir = path_dirname(__FILE__); /* running from elsewhere: next to this source file */
    char *p = path_join(dir, "fixtures/results_sample.json");
    free(dir);
    return p;
}

static char *tmp(const char *name) { return path_join(test_tmpdir(), name); }

static char *slurp(const char *path) {
    char *d = NULL;
    size_t n = 0;
    if (read_file(path, &d, &n)) return NULL;
    return d;
}

static void write_text(const char *path, const char *text) { CHECK(atomic_write_file(path, text, strlen(text)) == 0); }

static char *html_escape(const char *s) {
    size_t n = strlen(s);
    char *o = xmalloc(6 * n + 1), *w = o;
    for (; *s; s++) {
        const char *r = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : *s == '\'' ? "&#39;" : NULL;
        if (r) w += sprintf(w, "%s", r);
        else *w++ = *s;
    }
    *w = 0;
    return o;
}

/* balanced tags: a small parser (void elements and "<x/>" do not open anything) */
static int tags_balanced(const char *h, char *why, size_t why_n) {
    static const char *const voids[] = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"};
    char stack[256][32];
    int depth = 0;
    for (const char *p = h; (p = strchr(p, '<')) != NULL;) {
        if (strncmp(p, "<!--", 4) == 0) {
            const char *e = strstr(p, "-->");
            if (!e) return snprintf(why, why_n, "unterminated comment"), 0;
            p = e + 3;
            continue;
        }
        if (p[1] == '!') {
            p = strchr(p, '>');
            if (!p) return snprintf(why, why_n, "unterminated declaration"), 0;
            continue;
        }
        int closing = p[1] == '/';
        const char *n = p + 1 + closing;
        char name[32];
        int k = 0;
        while ((isalnum((unsigned char)*n) || *n == '-') && k < 31) name[k++] = (char)tolower((unsigned char)*n++);
        name[k] = 0;
        if (!k) return snprintf(why, why_n, "stray '<' at offset %ld", (long)(p - h)), 0;
        /* find the end of the tag, skipping quoted attribute values */
        const char *q = n;
        char quote = 0;
        for (; *q; q++) {
            if (quote) {
                if (*q == quote) quote = 0;
            } else if (*q == '"' || *q == '\'') quote = *q;
            else if (*q == '>') break;
        }
        if (!*q) return snprintf(why, why_n, "unterminated <%s>", name), 0;
        int self_closing = q[-1] == '/';
        p = q + 1;
        if (closing) {
            if (!depth || strcmp(stack[depth - 1], name) != 0)
                return snprintf(why, why_n, "</%s> closes <%s>", name, depth ? stack[depth - 1] : "(nothing)"), 0;
            depth--;
            continue;
        }
        int is_void = self_closing;
        for (size_t i = 0; i < sizeof voids / sizeof *voids; i++) is_void |= strcmp(name, voids[i]) == 0;
        if (is_void) continue;
        if (depth == 256) return snprintf(why, why_n, "nesting too deep"), 0;
        snprintf(stack[depth++], sizeof stack[0], "%s", name);
        if (strcmp(name, "style") == 0 || strcmp(name, "script") == 0) { /* raw text up to its end tag */
            char end[40];
            snprintf(end, sizeof end, "</%s", name);
            const char *e = strstr(p, end);
            if (!e) return snprintf(why, why_n, "unterminated <%s>", name), 0;
            p = e;
        }
    }
    if (depth) return snprintf(why, why_n, "unclosed <%s> (depth %d)", stack[depth - 1], depth), 0;
    return 1;
}

/* the same with Python's html.parser, where python3 exists */
static int python_balanced(const char *html_path) {
    if (!path_exists("/usr/bin/python3")) return 1;
    char *script = tmp("check_html.py");
    write_text(script,
               "import sys\n"
               "from html.parser import HTMLParser\n"
               "VOID = {'area','base','br','col','embed','hr','img','input','link','meta','source','track','wbr'}\n"
               "class P(HTMLParser):\n"
               "    def __init__(s):\n"
               "        super().__init__(convert_charrefs=True); s.stack = []; s.err = []\n"
               "    def handle_starttag(s, tag, attrs):\n"
               "        if tag not in VOID: s.stack.append(tag)\n"
               "    def handle_endtag(s, tag):\n"
               "        if tag in VOID: return\n"
               "        if not s.stack or s.stack[-1] != tag: s.err.append('</%s> at %s closes %s' % (tag, s.getpos(), s.stack[-1:] ))\n"
               "        else: s.stack.pop()\n"
               "p = P(); p.feed(open(sys.argv[1], encoding='utf-8').read()); p.close()\n"
               "if p.stack: p.err.append('unclosed %s' % p.stack[-3:])\n"
               "for e in p.err[:5]: print('html.parser:', e)\n"
               "sys.exit(1 if p.err else 0)\n");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", script, html_path);
    int rc = system(cmd);
    free(script);
    return rc == 0;
}

/* "nan" / "inf" as a word (any case, optionally signed): never printed */
static int iprefix(const char *s, const char *w) {
    for (; *w; s++, w++)
        if (tolower((unsigned char)*s) != *w) return 0;
    return 1;
}

static int has_nonfinite_word(const char *s) {
    for (const char *p = s; *p; p++) {
        if (p > s && isalpha((unsigned char)p[-1])) continue;
        size_t n = 0;
        if (iprefix(p, "nan")) n = 3;
        else if (iprefix(p, "infinity")) n = 8;
        else if (iprefix(p, "inf")) n = 3;
        if (n && !isalpha((unsigned char)p[n])) return 1;
    }
    return 0;
}

static void check_html_file(const char *path) {
    char *h = slurp(path);
    CHECK(h != NULL);
    if (!h) return;
    char why[256] = "";
    CHECK_MSG(tags_balanced(h, why, sizeof why), "%s: unbalanced HTML: %s", path, why);
    CHECK_MSG(python_balanced(path), "%s: html.parser found unbalanced tags", path);
    CHECK(strncmp(h, "<!DOCTYPE html>", 15) == 0);
    CHECK(strstr(h, "</html>") != NULL);
    CHECK_MSG(!has_nonfinite_word(h), "%s contains nan/inf", path);
    /* self-contained: no scripts, no external resources */
    CHECK(strstr(h, "<script") == NULL);
    CHECK(strstr(h, "<link") == NULL);
    CHECK(strstr(h, " src=") == NULL);
    CHECK(strstr(h, "href=") == NULL);
    const char *u = h;
    while ((u = strstr(u, "http")) != NULL) { /* only the SVG namespace may name a URL */
        CHECK_MSG(strncmp(u, "http://www.w3.org/2000/svg", 26) == 0, "external URL in report: %.40s", u);
        u += 4;
    }
    free(h);
}

static int count_of(const char *h, const char *needle) {
    int n = 0;
    for (const char *p = h; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* "2.1000 ± 0.0100 (3)", formatted independently of the report code */
static void expect_stat(char *out, size_t n, const cJSON *st) {
    double m = cJSON_GetObjectItem(st, "mean")->valuedouble, s = cJSON_GetObjectItem(st, "std")->valuedouble;
    snprintf(out, n, "%.4f \xc2\xb1 %.4f (%d)", m, s, cJSON_GetObjectItem(st, "n")->valueint);
}

TEST(report_html_sample) {
    char *in = sample_path(), *out = tmp("report.html");
    up_clear_error();
    CHECK_MSG(report_write_html(in, out) == 0, "report_write_html: %s", up_last_error());
    check_html_file(out);
    char *h = slurp(out), *js = slurp(in);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    CHECK(h && root);
    if (!h || !root) goto done;
    CHECK(count_of(h, "<svg") >= 7); /* (a), (a'), (b), (c), (d), (e), (f), (g) */
    CHECK(strstr(h, "(a) Validation loss vs step") && strstr(h, "(b) Validation loss vs cumulative FLOPs") &&
          strstr(h, "(c) Validation loss vs measured seconds") && strstr(h, "(d) Upcycling efficiency") &&
          strstr(h, "(e) Expert load imbalance") && strstr(h, "(f) Replica similarity") && strstr(h, "(g) Training loss"));
    CHECK(strstr(h, "<polyline") && strstr(h, "<polygon") && strstr(h, "linearGradient"));
    /* header */
    CHECK(strstr(h, "tiny") && strstr(h, "data/shakespeare") && strstr(h, "hidden_size 128") && strstr(h, "8 experts, top-2") &&
          strstr(h, "300 steps"));
    /* every comparison's values and efficiency (or its full reason, HTML-escaped) */
    int undefined = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "comparisons")) {
        char want[128];
        const char *arms[] = {"fixed_E", "upcycled", "fixed_mE"};
        for (int i = 0; i < 3; i++) {
            expect_stat(want, sizeof want, cJSON_GetObjectItem(c, arms[i]));
            CHECK_MSG(strstr(h, want) != NULL, "HTML lacks %s value %s", arms[i], want);
        }
        const cJSON *eff = cJSON_GetObjectItem(c, "efficiency");
        if (cJSON_IsTrue(cJSON_GetObjectItem(eff, "defined"))) {
            const cJSON *ci = cJSON_GetObjectItem(eff, "ci95");
            snprintf(want, sizeof want, "%.1f [%.1f, %.1f]", cJSON_GetObjectItem(eff, "mean")->valuedouble,
                     cJSON_GetArrayItem(ci, 0)->valuedouble, cJSON_GetArrayItem(ci, 1)->valuedouble);
            CHECK_MSG(strstr(h, want) != NULL, "HTML lacks efficiency %s", want);
        } else {
            char *why = html_escape(cJSON_GetObjectItem(eff, "reason")->valuestring);
            CHECK_MSG(strstr(h, why) != NULL, "HTML lacks the undefined reason %s", why);
            free(why);
            undefined++;
        }
        char *label = html_escape(cJSON_GetObjectItem(c, "label")->valuestring);
        CHECK_MSG(strstr(h, label) != NULL, "HTML lacks label %s", label);
        free(label);
    }
    CHECK(undefined == 1);
    CHECK(strstr(h, "class=\"undef\"") != NULL);
    CHECK(strstr(h, "8 -&gt; 16, tau = 50%") != NULL); /* labels are escaped */
    /* sweep headings in the schema's order, only those present */
    const char *m = strstr(h, "<h3>main"), *cp = strstr(h, "<h3>cpt_budget"), *al = strstr(h, "<h3>alloc"), *in_ = strstr(h, "<h3>init");
    CHECK(m && cp && al && in_ && m < cp && cp < al && al < in_);
    CHECK(strstr(h, "<h3>timing") == NULL && strstr(h, "<h3>activation") == NULL);
    /* compute table, Spearman, notes (escaped), how-to-read */
    CHECK(strstr(h, "Sunk-cost saving %") && strstr(h, "t_mE (s/step)"));
    CHECK(strstr(h, "Spearman"));
    CHECK(strstr(h, "(&lt;a&gt; &amp; &quot;quotes&quot; are escaped)") != NULL);
    CHECK(strstr(h, "<a>") == NULL);
    CHECK(strstr(h, "How to read this") && strstr(h, "Sunk-cost saving</b>"));
    CHECK(strstr(h, "undefined (see note)") != NULL); /* hollow marker in (d) */
    CHECK(strstr(h, "class=\"failed\"") != NULL);     /* the failed run is marked */
done:
    cJSON_Delete(root);
    free(h), free(js), free(in), free(out);
}

TEST(report_html_variants) {
    /* (b) and (c) are derived from the curves when "frontier" is absent; a timing sweep gets
     * its own heading and efficiency plot */
    char *in = sample_path(), *js = slurp(in), *mod = tmp("nofrontier.json"), *out = tmp("nofrontier.html");
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    CHECK(root != NULL);
    if (root) {
        cJSON_DeleteItemFromObject(root, "frontier");
        cJSON_DeleteItemFromObject(root, "spearman");
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "comparisons")) {
            cJSON *sw = cJSON_GetObjectItem(c, "sweep");
            if (cJSON_IsString(sw) && strcmp(sw->valuestring, "cpt_budget") == 0)
                cJSON_ReplaceItemInObject(c, "sweep", cJSON_CreateString("timing"));
        }
        char *s = cJSON_PrintUnformatted(root);
        write_text(mod, s);
        free(s);
        CHECK_MSG(report_write_html(mod, out) == 0, "%s", up_last_error());
        check_html_file(out);
        char *h = slurp(out);
        CHECK(h && strstr(h, "(b) Validation loss vs cumulative FLOPs") && strstr(h, "Source: run curves"));
        CHECK(h && strstr(h, "Spearman") == NULL);
        CHECK(h && strstr(h, "<h3>timing") && strstr(h, "Upcycling efficiency vs transition point"));
        CHECK(h && strstr(h, "<h3>main") < strstr(h, "<h3>timing") && strstr(h, "<h3>timing") < strstr(h, "<h3>cpt_budget"));
        free(h);
    }
    cJSON_Delete(root);
    free(in), free(js), free(mod), free(out);
}

TEST(report_csv_sample) {
    char *in = sample_path(), *out = tmp("runs.csv"), *js = slurp(in);
    CHECK_MSG(report_write_csv(in, out) == 0, "%s", up_last_error());
    char *csv = slurp(out);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    CHECK(csv && root);
    if (csv && root) {
        const char *head = "id,sweep,arm,label,x,seed,status,experts,growth_steps,final_val_loss,total_seconds,total_flops,"
                           "loss_before_growth,loss_after_growth\n";
        CHECK(strncmp(csv, head, strlen(head)) == 0);
        int lines = count_of(csv, "\n");
        CHECK_MSG(lines == 1 + cJSON_GetArraySize(cJSON_GetObjectItem(root, "runs")), "%d lines", lines);
        CHECK(strstr(csv, "main/upcycled/seed1,main,upcycled,\"8 -> 16, tau = 50%\",0.5,1,done,8;16,150,") != NULL);
        CHECK(strstr(csv, "main/fixed-E/seed1,main,fixed-E,\"8 -> 16, tau = 50%\",0.5,1,done,8,,") != NULL);
        CHECK(strstr(csv, ",failed,8;16,150,,,,,\n") != NULL); /* nulls are empty fields */
        CHECK(!has_nonfinite_word(csv));
    }
    cJSON_Delete(root);
    free(csv), free(js), free(in), free(out);
}

TEST(report_text_tables) {
    char *in = sample_path(), *out = tmp("tables.txt"), *js = slurp(in);
    FILE *f = fopen(out, "w");
    CHECK(f != NULL);
    if (!f) goto done;
    CHECK_MSG(report_print_tables(in, f) == 0, "%s", up_last_error());
    fclose(f);
    char *t = slurp(out);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    CHECK(t && root);
    if (t && root) {
        CHECK(strstr(t, "== main") && strstr(t, "== cpt_budget") && strstr(t, "== alloc") && strstr(t, "== init"));
        CHECK(strstr(t, "Label") && strstr(t, "Fixed-E") && strstr(t, "Upcycled") && strstr(t, "Fixed-mE") && strstr(t, "Eff. %"));
        CHECK(strstr(t, "compute:") && strstr(t, "Sunk-cost saving %"));
        CHECK(strstr(t, "Spearman"));
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "comparisons")) {
            char want[128];
            expect_stat(want, sizeof want, cJSON_GetObjectItem(c, "upcycled"));
            CHECK_MSG(strstr(t, want) != NULL, "text lacks %s", want);
            const char *label = cJSON_GetObjectItem(c, "label")->valuestring;
            CHECK_MSG(strstr(t, label) != NULL, "text lacks row %s", label);
            const cJSON *eff = cJSON_GetObjectItem(c, "efficiency");
            if (cJSON_IsFalse(cJSON_GetObjectItem(eff, "defined")))
                CHECK(strstr(t, cJSON_GetObjectItem(eff, "reason")->valuestring) != NULL); /* in full, unescaped */
        }
        CHECK(!has_nonfinite_word(t));
    }
    cJSON_Delete(root);
    free(t);
done:
    free(js), free(in), free(out);
}

static void check_fails(const char *in, const char *must_contain) {
    char *out = tmp("out.html"), *csv = tmp("out.csv");
    up_clear_error();
    CHECK(report_write_html(in, out) == -1);
    CHECK_MSG(strstr(up_last_error(), in) != NULL, "error does not name the file: %s", up_last_error());
    CHECK_MSG(strstr(up_last_error(), must_contain) != NULL, "error lacks '%s': %s", must_contain, up_last_error());
    CHECK(!path_exists(out));
    up_clear_error();
    CHECK(report_write_csv(in, csv) == -1);
    CHECK(strstr(up_last_error(), in) != NULL);
    CHECK(!path_exists(csv));
    up_clear_error();
    char *txt = tmp("unused.txt");
    FILE *f = fopen(txt, "w");
    free(txt);
    if (f) {
        CHECK(report_print_tables(in, f) == -1);
        CHECK(strstr(up_last_error(), in) != NULL);
        fclose(f);
    }
    free(out), free(csv);
}

TEST(report_errors) {
    char *bad = tmp("bad.json"), *noruns = tmp("noruns.json"), *notarr = tmp("runsobj.json"), *top = tmp("array.json");
    write_text(bad, "{\"runs\": [ {\"id\": \"x\", }\n");
    write_text(noruns, "{\"version\": 1, \"comparisons\": []}");
    write_text(notarr, "{\"runs\": {\"id\": \"x\"}}");
    write_text(top, "[1, 2, 3]");
    check_fails(bad, "invalid JSON");
    check_fails(noruns, "\"runs\"");
    check_fails(notarr, "\"runs\"");
    check_fails(top, "object");
    char *missing = tmp("does-not-exist.json");
    check_fails(missing, "cannot open");
    free(bad), free(noruns), free(notarr), free(top), free(missing);
}

TEST(report_runs_without_comparisons) {
    char *in = tmp("runs_only.json"), *out = tmp("short.html"), *csv = tmp("short.csv");
    write_text(in, "{\"version\":1,\"preset\":\"tiny\",\"runs\":["
                   "{\"id\":\"main/fixed-E/seed1\",\"sweep\":\"main\",\"arm\":\"fixed-E\",\"label\":\"a\",\"x\":null,\"seed\":1,"
                   "\"status\":\"done\",\"growth_steps\":[],\"experts\":[8],\"final_val_loss\":2.5,"
                   "\"curve\":[{\"step\":10,\"val_loss\":3.0,\"loss\":3.1},{\"step\":20,\"val_loss\":2.7,\"loss\":null},"
                   "{\"step\":30,\"val_loss\":null,\"loss\":2.6},{\"step\":40,\"val_loss\":2.5}]},"
                   "{\"id\":\"main/upcycled/seed1\",\"sweep\":\"main\",\"arm\":\"upcycled\",\"status\":\"done\","
                   "\"growth_steps\":[20],\"curve\":[{\"step\":10,\"val_loss\":3.0,\"flops\":1e9,\"seconds\":1},"
                   "{\"step\":40,\"val_loss\":2.4,\"flops\":4e9,\"seconds\":null}]},"
                   "{\"id\":\"bare\"},"
                   "{\"sweep\":\"alloc\",\"curve\":null,\"load\":{\"layers\":[1],\"steps\":[],\"imbalance\":null},\"diag\":null}"
                   "]}");
    up_clear_error();
    CHECK_MSG(report_write_html(in, out) == 0, "%s", up_last_error());
    check_html_file(out);
    char *h = slurp(out);
    CHECK(h && strstr(h, "No comparison computed") && strstr(h, "(a) Validation loss vs step"));
    CHECK(h && strstr(h, "(e) Expert load") == NULL && strstr(h, "(d) Upcycling") == NULL);
    CHECK(h && strstr(h, "No notes."));
    free(h);
    CHECK_MSG(report_write_csv(in, csv) == 0, "%s", up_last_error());
    char *c = slurp(csv);
    CHECK(c && count_of(c, "\n") == 5);
    CHECK(c && strstr(c, "\nbare,,,,,,,,,,,,,\n"));
    free(c);
    char *txt = tmp("t.txt");
    FILE *f = fopen(txt, "w");
    free(txt);
    CHECK(f && report_print_tables(in, f) == 0);
    if (f) fclose(f);

    /* empty runs array: still a (very short) valid report */
    write_text(in, "{\"runs\":[]}");
    CHECK(report_write_html(in, out) == 0);
    check_html_file(out);
    CHECK(report_write_csv(in, csv) == 0);
    free(in), free(out), free(csv);
}

TEST(report_tolerates_nulls) {
    /* every optional field null or of the wrong shape: no crash, still well-formed */
    char *in = tmp("nulls.json"), *out = tmp("nulls.html");
    write_text(in, "{\"preset\":null,\"machine\":7,\"base\":{\"model\":null,\"train\":{\"steps\":null}},"
                   "\"runs\":[{\"id\":\"cpt_budget/upcycled/s1\",\"sweep\":\"cpt_budget\",\"arm\":\"upcycled\",\"status\":\"done\","
                   "\"growth_steps\":[null],\"experts\":[8,null,16],"
                   "\"curve\":[{\"step\":null,\"val_loss\":2},{\"step\":5}],"
                   "\"load\":{\"layers\":[1,3],\"steps\":[10,20,30],\"imbalance\":[[1.5,null],null]},"
                   "\"diag\":[{\"step\":10,\"layer\":1,\"replica_cosine_mean\":null,\"cosine_to_source_mean\":0.9},{\"layer\":3}]}],"
                   "\"comparisons\":[{\"sweep\":\"cpt_budget\",\"label\":null,\"x\":0.5,\"fixed_E\":null,"
                   "\"upcycled\":{\"mean\":2.0,\"std\":null,\"n\":1},\"fixed_mE\":{},"
                   "\"efficiency\":{\"defined\":false,\"mean\":null,\"ci95\":null,\"reason\":null},\"compute\":{\"t_E\":null}},"
                   "{\"sweep\":\"cpt_budget\",\"x\":0.7,\"efficiency\":{\"defined\":true,\"mean\":50,\"ci95\":[null,60]}},"
                   "{\"sweep\":null,\"efficiency\":7}],"
                   "\"spearman\":{\"rho\":null},\"frontier\":[{\"arm\":\"fixed-E\",\"flops\":[1,null],\"val_loss\":[null]}],"
                   "\"notes\":[null,\"one <b>note</b>\",3]}");
    up_clear_error();
    CHECK_MSG(report_write_html(in, out) == 0, "%s", up_last_error());
    check_html_file(out);
    char *h = slurp(out);
    CHECK(h && strstr(h, "one &lt;b&gt;note&lt;/b&gt;"));
    CHECK(h && strstr(h, "(e) Expert load imbalance"));  /* partial rows are drawn, gaps gray */
    CHECK(h && strstr(h, "(d) Upcycling efficiency")); /* one defined point, one undefined */
    free(h);
    char *txt = tmp("t.txt");
    FILE *f = fopen(txt, "w");
    free(txt);
    CHECK(f && report_print_tables(in, f) == 0);
    if (f) fclose(f);
    char *csv = tmp("x.csv");
    CHECK(report_write_csv(in, csv) == 0);
    free(in), free(out), free(csv);
}

TEST(report_lists_fields_of_the_wrong_type) {
    /* a wrong-typed field is util/json.h's error: the report still renders, shows the value as
     * absent and lists the message (file and field) under "Problems"; a clean file lists none */
    char *in = tmp("typed.json"), *out = tmp("typed.html"), *txt = tmp("typed.txt");
    write_text(in, "{\"preset\":\"tiny\",\"machine\":7,\"runs\":["
                   "{\"id\":\"main/upcycled/seed1\",\"sweep\":\"main\",\"arm\":\"upcycled\",\"seed\":\"one\",\"status\":\"done\","
                   "\"growth_steps\":[\"20\"],\"curve\":[{\"step\":10,\"val_loss\":3.0},{\"step\":20,\"val_loss\":2.5}]}],"
                   "\"comparisons\":[{\"sweep\":\"main\",\"label\":\"m\",\"fixed_E\":{\"mean\":2.0,\"std\":0.1,\"n\":2},"
                   "\"efficiency\":\"high\"}]}");
    up_clear_error();
    CHECK_MSG(report_write_html(in, out) == 0, "%s", up_last_error());
    check_html_file(out);
    char *h = slurp(out);
    CHECK(h && strstr(h, "<h2>Problems</h2>"));
    char want[1024];
    const char *fields[][2] = {{"machine", "a number; expected a string"},
                               {"seed", "a string; expected a number"},
                               {"growth_steps[0]", "a string; expected a number"},
                               {"efficiency", "a string; expected an object"}};
    for (int i = 0; i < 4; i++) {
        snprintf(want, sizeof want, "%s: field %s: is %s", in, fields[i][0], fields[i][1]);
        char *esc = html_escape(want);
        CHECK_MSG(h && strstr(h, esc), "HTML lacks the problem '%s'", want);
        free(esc);
    }
    CHECK(h && count_of(h, "field machine:") == 1); /* read twice (header, title), listed once */
    CHECK(h && strstr(h, "<th>Machine</th><td>" DASH_UTF8 "</td>")); /* shown as absent */
    CHECK(h && strstr(h, "2.0000 \xc2\xb1 0.1000 (2)"));             /* the rest of the file is shown */
    free(h);
    FILE *f = fopen(txt, "w");
    CHECK(f && report_print_tables(in, f) == 0);
    if (f) fclose(f);
    char *t = slurp(txt);
    snprintf(want, sizeof want, "- %s: field machine: is a number; expected a string\n", in);
    CHECK(t && strstr(t, "Problems (fields of the wrong type, shown as absent):\n") && strstr(t, want));
    free(t);
    char *csv = tmp("typed.csv");
    CHECK(report_write_csv(in, csv) == 0);
    /* a results.json as the runner writes it has no problems */
    char *sample = sample_path();
    CHECK(report_write_html(sample, out) == 0);
    h = slurp(out);
    CHECK(h && strstr(h, "Problems") == NULL);
    free(h);
    free(in), free(out), free(txt), free(csv), free(sample);
}
