/* report_csv.c - report_write_csv (report.h): one row per run of results.json. */
#include <cjson/cJSON.h>
#include <string.h>

#include "experiment/report.h"
#include "experiment/report_results.h"
#include "util.h"
#include "util/strbuf.h"

/* RFC 4180: a field holding a comma, quote or line break is quoted, quotes doubled */
static void csv_field(Strbuf *b, const char *s) {
    if (!s) return;
    if (strpbrk(s, ",\"\n\r")) {
        sb_putn(b, "\"", 1);
        for (const char *p = s; *p; p++) {
            if (*p == '"') sb_putn(b, "\"", 1);
            sb_putn(b, p, 1);
        }
        sb_putn(b, "\"", 1);
    } else sb_put(b, s);
}

static void csv_num(Results *R, Strbuf *b, const cJSON *o, const char *k) { sb_put(b, fmt_csv_num(res_num(R, o, k)).s); }

int report_write_csv(const char *results_json_path, const char *csv_path) {
    Results R;
    if (results_load(&R, results_json_path)) return -1;
    Strbuf b = {0};
    sb_put(&b, "id,sweep,arm,label,x,seed,status,experts,growth_steps,final_val_loss,total_seconds,total_flops,"
               "loss_before_growth,loss_after_growth\n");
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(&R, R.root, "runs")) {
        char list[512];
        csv_field(&b, res_str(&R, r, "id"));
        sb_put(&b, ",");
        csv_field(&b, res_str(&R, r, "sweep"));
        sb_put(&b, ",");
        csv_field(&b, res_str(&R, r, "arm"));
        sb_put(&b, ",");
        csv_field(&b, res_str(&R, r, "label"));
        sb_put(&b, ",");
        csv_num(&R, &b, r, "x");
        sb_put(&b, ",");
        csv_num(&R, &b, r, "seed");
        sb_put(&b, ",");
        csv_field(&b, res_str(&R, r, "status"));
        sb_put(&b, ",");
        join_nums(&R, list, sizeof list, res_arr(&R, r, "experts"), "experts", ";");
        csv_field(&b, list);
        sb_put(&b, ",");
        join_nums(&R, list, sizeof list, res_arr(&R, r, "growth_steps"), "growth_steps", ";");
        csv_field(&b, list);
        static const char *const nums[] = {"final_val_loss", "total_seconds", "total_flops", "loss_before_growth", "loss_after_growth"};
        for (int i = 0; i < 5; i++) {
            sb_put(&b, ",");
            csv_num(&R, &b, r, nums[i]);
        }
        sb_put(&b, "\n");
    }
    int rc = atomic_write_file(csv_path, b.s, b.len);
    sb_free(&b);
    results_free(&R);
    return rc;
}
