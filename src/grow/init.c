/* init.c - initialization heuristics for replicas; the exact definitions are in init.h. */
#include "grow/init.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK from OpenBLAS, Fortran ABI: column-major, everything by pointer, and gfortran's
 * hidden length argument for the character parameter at the end. */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
                    size_t jobz_len);

/* ======================================================================================
 * Method tables: one place that drives parsing, validation, --help and describe().
 * ====================================================================================== */

typedef enum { PARAM_REAL, PARAM_INT, PARAM_CHOICE } ParamKind;

static const char *const DROP_INIT_NAMES[] = {"xavier", "kaiming", "normal"};
#define N_DROP_INIT_NAMES 3

typedef struct {
    const char *key;
    ParamKind kind;
    float value; /* default */
    float min, max;
    int min_exclusive; /* range is (min, max] instead of [min, max] */
    const char *meaning;
} ParamSpec;

typedef struct {
    const char *name;
    const char *summary;
    int n_params;
    ParamSpec params[INIT_MAX_PARAMS];
} MethodSpec;

static const MethodSpec EXPERT_METHODS[EXPERT_INIT_METHODS] = {
    [EXPERT_INIT_COPY] = {"copy", "exact copy of the source expert (the paper's choice)", 0, {{0}}},
    [EXPERT_INIT_NOISE] = {"noise", "add Gaussian noise relative to each matrix's std", 1,
                           {{"sigma", PARAM_REAL, 0.01f, 0, 10, 0, "noise std / std of the source matrix"}}},
    [EXPERT_INIT_DROP] = {"drop", "re-initialize a random fraction of the hidden units (Drop-Upcycling)", 2,
                          {{"frac", PARAM_REAL, 0.5f, 0, 1, 0, "fraction of the F hidden units re-initialized"},
                           {"init", PARAM_CHOICE, DROP_INIT_XAVIER, 0, N_DROP_INIT_NAMES - 1, 0,
                            "xavier: U(+-sqrt(6/(C+F))), kaiming: N(0, 2/fan_in), normal: N(0, source std^2)"}}},
    [EXPERT_INIT_SHUFFLE] = {"shuffle", "random permutation of the hidden units (function-preserving)", 0, {{0}}},
    [EXPERT_INIT_INTERPOLATE] = {"interpolate", "(1-alpha)*source + alpha*neighbour (expert source-1, or 1)", 1,
                                 {{"alpha", PARAM_REAL, 0.5f, 0, 1, 0, "weight of the neighbour expert"}}},
    [EXPERT_INIT_ORTHOGONAL] = {"orthogonal", "random direction orthogonal to the source, same norm", 0, {{0}}},
    [EXPERT_INIT_SCALED] = {"scaled", "factor * source", 1,
                            {{"factor", PARAM_REAL, 0.95f, 0, 1000, 1, "multiplier of every weight"}}},
    [EXPERT_INIT_SVD_PERTURB] = {"svd-perturb", "per matrix: jitter singular values, zero the smallest", 2,
                                 {{"sigma", PARAM_REAL, 0.05f, 0, 10, 0, "s_i *= 1 + sigma*N(0,1)"},
                                  {"drop", PARAM_REAL, 0.1f, 0, 1, 0, "fraction of smallest singular values zeroed"}}},
    [EXPERT_INIT_SVD_MIX] = {"svd-mix", "per matrix: bottom singular components taken from the neighbour", 1,
                             {{"ratio", PARAM_REAL, 0.3f, 0, 1, 0, "fraction of components replaced"}}},
    [EXPERT_INIT_SPARSE_CODE] = {"sparse-code", "hidden units replaced by their sparse code in a learned dictionary", 4,
                                 {{"atoms", PARAM_INT, 1024, 1, 8192, 0, "dictionary size (capped at samples)"},
                                  {"lambda", PARAM_REAL, 0.1f, 0, 10, 0, "L1 weight, relative to unit-norm units"},
                                  {"iters", PARAM_INT, 5, 1, 1000, 0, "dictionary-learning rounds"},
                                  {"samples", PARAM_INT, 4096, 1, 65536, 0, "hidden units used to learn it"}}},
};

static const MethodSpec ROUTER_METHODS[ROUTER_INIT_METHODS] = {
    [ROUTER_INIT_COPY] = {"copy", "exact copy of the source row (the paper's choice)", 0, {{0}}},
    [ROUTER_INIT_NOISE] = {"noise", "add Gaussian noise relative to the row's std", 1,
                           {{"sigma", PARAM_REAL, 0.01f, 0, 10, 0, "noise std / std of the source row"}}},
    [ROUTER_INIT_INTERPOLATE] = {"interpolate", "(1-alpha)*source row + alpha*neighbour row (source-1, or 1)", 1,
                                 {{"alpha", PARAM_REAL, 0.5f, 0, 1, 0, "weight of the neighbour row"}}},
    [ROUTER_INIT_BIAS_ONLY] = {"bias-only", "row untouched; only the grower's balancing-bias noise", 0, {{0}}},
    [ROUTER_INIT_SCALED] = {"scaled", "factor * source row", 1,
                            {{"factor", PARAM_REAL, 0.95f, 0, 1000, 1, "multiplier of the row"}}},
    [ROUTER_INIT_PERTURB_NEW] = {"perturb-new", "relative noise on the replica's row and absolute on its bias", 1,
                                 {{"sigma", PARAM_REAL, 0.01f, 0, 10, 0, "row: relative std; bias: absolute std"}}},
    [ROUTER_INIT_ORTHOGONAL] = {"orthogonal", "random row orthogonal to the source row, same norm", 0, {{0}}},
    [ROUTER_INIT_ADVERSARIAL] = {"adversarial", "-beta * source row (opposite direction)", 1,
                                 {{"beta", PARAM_REAL, 1.0f, 0, 1000, 1, "length relative to the source row"}}},
    [ROUTER_INIT_TEMPERATURE] = {"temperature", "source row / tau", 1,
                                 {{"tau", PARAM_REAL, 2.0f, 0, 1000, 1, "temperature"}}},
    [ROUTER_INIT_SVD_PERTURB] = {"svd-perturb", "jitter the router's singular values, write the replica row", 1,
                                 {{"sigma", PARAM_REAL, 0.05f, 0, 10, 0, "s_i *= 1 + sigma*N(0,1)"}}},
};

/* ---- parsing ---- */

static void list_methods(const MethodSpec *table, int n_methods, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = 0;
    for (int m = 0; m < n_methods && used < size; m++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", m ? ", " : "", table[m].name);
}

static void list_keys(const MethodSpec *method, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = 0;
    if (method->n_params == 0) snprintf(buf, size, "no parameters");
    for (int k = 0; k < method->n_params && used < size; k++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", k ? ", " : "", method->params[k].key);
}

/* "a number in [0, 1]" and the like, for error messages and --help */
static void describe_range(const ParamSpec *param, char *buf, size_t size) {
    if (param->kind == PARAM_CHOICE)
        snprintf(buf, size, "one of xavier, kaiming, normal");
    else
        snprintf(buf, size, "%s in %s%g, %g]", param->kind == PARAM_INT ? "an integer" : "a number",
                 param->min_exclusive ? "(" : "[", (double)param->min, (double)param->max);
}

static int value_in_range(const ParamSpec *param, double value) {
    if (!isfinite(value) || value > param->max) return 0;
    if (param->kind != PARAM_REAL && value != floor(value)) return 0;
    return param->min_exclusive ? value > param->min : value >= param->min;
}

static int parse_value(const ParamSpec *param, const char *text, float *value) {
    if (param->kind == PARAM_CHOICE) {
        for (int c = 0; c < N_DROP_INIT_NAMES; c++)
            if (strcmp(text, DROP_INIT_NAMES[c]) == 0) return *value = (float)c, 0;
        return -1;
    }
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || *end != 0 || !value_in_range(param, v)) return -1;
    *value = (float)v;
    return 0;
}

static const ParamSpec *find_param(const MethodSpec *method, const char *key, int *index) {
    for (int k = 0; k < method->n_params; k++)
        if (strcmp(method->params[k].key, key) == 0) return *index = k, &method->params[k];
    return NULL;
}

/* parses "key=value,key=value" into p (already holding the defaults) */
static int parse_params(const char *what, const char *spec, const MethodSpec *method, char *list, float *p) {
    char keys[128], range[96];
    for (char *item = list, *next; item; item = next) {
        next = strchr(item, ',');
        if (next) *next++ = 0;
        char *eq = strchr(item, '=');
        if (!eq || eq == item)
            return up_error("%s \"%s\": \"%s\" is not key=value; expected e.g. %s:%s=%g", what, spec, item,
                            method->name, method->n_params ? method->params[0].key : "key",
                            method->n_params ? (double)method->params[0].value : 1.0);
        *eq = 0;
        int index = 0;
        const ParamSpec *param = find_param(method, item, &index);
        list_keys(method, keys, sizeof keys);
        if (!param)
            return up_error("%s \"%s\": unknown parameter \"%s\" for %s; expected %s", what, spec, item, method->name,
                            keys);
        describe_range(param, range, sizeof range);
        if (parse_value(param, eq + 1, &p[index]) != 0)
            return up_error("%s \"%s\": bad value \"%s\" for %s; expected %s", what, spec, eq + 1, param->key, range);
    }
    return 0;
}

static int parse_spec(const char *what, const MethodSpec *table, int n_methods, const char *spec, int *method_out,
                      float *p_out, char *name_out) {
    char text[256], methods[256];
    list_methods(table, n_methods, methods, sizeof methods);
    if (!spec || !spec[0]) return up_error("%s: empty specification; expected one of %s", what, methods);
    if (strlen(spec) >= sizeof text)
        return up_error("%s: specification longer than %zu characters; expected METHOD[:key=value,...]", what,
                        sizeof text - 1);
    strcpy(text, spec);
    char *colon = strchr(text, ':');
    if (colon) *colon = 0;
    int method = -1;
    for (int m = 0; m < n_methods; m++)
        if (strcmp(text, table[m].name) == 0) method = m;
    if (method < 0) return up_error("%s \"%s\": unknown method \"%s\"; expected one of %s", what, spec, text, methods);
    float p[INIT_MAX_PARAMS] = {0};
    for (int k = 0; k < table[method].n_params; k++) p[k] = table[method].params[k].value;
    if (colon && parse_params(what, spec, &table[method], colon + 1, p) != 0) return -1;
    *method_out = method;
    memcpy(p_out, p, sizeof p);
    snprintf(name_out, 32, "%s", table[method].name);
    return 0;
}

int expert_init_parse(const char *spec, ExpertInit *out) {
    if (!out) return up_error("expert init: no output; expected an ExpertInit to fill");
    return parse_spec("expert init", EXPERT_METHODS, EXPERT_INIT_METHODS, spec, &out->method, out->p, out->name);
}

int router_init_parse(const char *spec, RouterInit *out) {
    if (!out) return up_error("router init: no output; expected a RouterInit to fill");
    return parse_spec("router init", ROUTER_METHODS, ROUTER_INIT_METHODS, spec, &out->method, out->p, out->name);
}

/* ---- help and describe ---- */

static void build_help(const MethodSpec *table, int n_methods, char *buf, size_t size) {
    size_t used = 0;
    char range[96];
    for (int m = 0; m < n_methods && used < size; m++) {
        used += (size_t)snprintf(buf + used, size - used, "  %-12s %s\n", table[m].name, table[m].summary);
        for (int k = 0; k < table[m].n_params && used < size; k++) {
            const ParamSpec *param = &table[m].params[k];
            char def[32];
            if (param->kind == PARAM_CHOICE)
                snprintf(def, sizeof def, "%s", DROP_INIT_NAMES[(int)param->value]);
            else
                snprintf(def, sizeof def, "%g", (double)param->value);
            describe_range(param, range, sizeof range);
            char assignment[64];
            snprintf(assignment, sizeof assignment, "%s=%s", param->key, def);
            used += (size_t)snprintf(buf + used, size - used, "      %-14s %s; %s\n", assignment, param->meaning,
                                     range);
        }
    }
}

const char *expert_init_help(void) {
    static char text[4096];
    if (!text[0]) build_help(EXPERT_METHODS, EXPERT_INIT_METHODS, text, sizeof text);
    return text;
}

const char *router_init_help(void) {
    static char text[4096];
    if (!text[0]) build_help(ROUTER_METHODS, ROUTER_INIT_METHODS, text, sizeof text);
    return text;
}

static int describe(const MethodSpec *table, int n_methods, int method, const float *p, char *buf, size_t size) {
    if (!buf || size == 0) buf = NULL, size = 0;
    if (method < 0 || method >= n_methods) return snprintf(buf, size, "invalid(%d)", method);
    char text[256];
    size_t used = (size_t)snprintf(text, sizeof text, "%s", table[method].name);
    for (int k = 0; k < table[method].n_params && used < sizeof text; k++) {
        const ParamSpec *param = &table[method].params[k];
        int choice = (int)p[k];
        if (param->kind == PARAM_CHOICE && choice >= 0 && choice < N_DROP_INIT_NAMES)
            used += (size_t)snprintf(text + used, sizeof text - used, "%c%s=%s", k ? ',' : ':', param->key,
                                     DROP_INIT_NAMES[choice]);
        else
            used += (size_t)snprintf(text + used, sizeof text - used, "%c%s=%g", k ? ',' : ':', param->key,
                                     (double)p[k]);
    }
    return snprintf(buf, size, "%s", text);
}

int expert_init_describe(const ExpertInit *init, char *buf, size_t size) {
    return init ? describe(EXPERT_METHODS, EXPERT_INIT_METHODS, init->method, init->p, buf, size) : -1;
}

int router_init_describe(const RouterInit *init, char *buf, size_t size) {
    return init ? describe(ROUTER_METHODS, ROUTER_INIT_METHODS, init->method, init->p, buf, size) : -1;
}

/* apply() re-checks the parameters: a caller may fill the struct by hand */
static int validate(const char *what, const MethodSpec *table, int n_methods, int method, const float *p) {
    char methods[256], range[96];
    if (method < 0 || method >= n_methods) {
        list_methods(table, n_methods, methods, sizeof methods);
        return up_error("%s: method %d out of range; expected one of %s", what, method, methods);
    }
    for (int k = 0; k < table[method].n_params; k++) {
        const ParamSpec *param = &table[method].params[k];
        if (!value_in_range(param, p[k])) {
            describe_range(param, range, sizeof range);
            return up_error("%s %s: %s = %g; expected %s", what, table[method].name, param->key, (double)p[k], range);
        }
    }
    return 0;
}

int init_neighbour(int source) { return source > 0 ? source - 1 : 1; }

/* ======================================================================================
 * Numerical helpers
 * ====================================================================================== */

static double mean_of(const float *x, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    return n ? sum / (double)n : 0;
}

/* population standard deviation */
static double std_of(const float *x, size_t n) {
    double mean = mean_of(x, n), sum = 0;
    for (size_t i = 0; i < n; i++) sum += ((double)x[i] - mean) * ((double)x[i] - mean);
    return n ? sqrt(sum / (double)n) : 0;
}

static double rms_of(const float *x, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
    return n ? sqrt(sum / (double)n) : 0;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void add_relative_noise(float *x, const float *source, size_t n, float sigma, Rng *rng) {
    double scale = sigma * std_of(source, n);
    for (size_t i = 0; i < n; i++) x[i] += (float)(scale * rng_normal(rng));
}

static void interpolate(float *x, const float *source, const float *neighbour, size_t n, float alpha) {
    for (size_t i = 0; i < n; i++) x[i] = (1.0f - alpha) * source[i] + alpha * neighbour[i];
}

static void scale_copy(float *x, const float *source, size_t n, float factor) {
    for (size_t i = 0; i < n; i++) x[i] = source[i] * factor;
}

/* Fisher-Yates on the first `count` positions: order[0..count) is a uniform sample without
 * replacement of 0..n-1 (count == n gives a uniform permutation). */
static size_t *random_order(size_t n, size_t count, Rng *rng) {
    size_t *order = xmalloc((n ? n : 1) * sizeof *order);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = 0; i < count && i + 1 < n; i++) {
        size_t j = i + (size_t)rng_below(rng, n - i);
        size_t t = order[i];
        order[i] = order[j], order[j] = t;
    }
    return order;
}

/* A vector split across segments (the expert's three matrices, or one router row). */
typedef struct {
    const float *source;
    float *replica;
    size_t n;
} Segment;

/* replica := random direction orthogonal to source (over all segments), rescaled to
 * ||source||. The draw g ~ N(0, scale_s^2) per segment keeps the matrices' relative sizes. */
static int orthogonalize(Segment *seg, int n_seg, const double *scale, Rng *rng) {
    double dot = 0, source_sq = 0, result_sq = 0;
    for (int s = 0; s < n_seg; s++)
        for (size_t i = 0; i < seg[s].n; i++) {
            seg[s].replica[i] = (float)(scale[s] * rng_normal(rng));
            dot += (double)seg[s].replica[i] * seg[s].source[i];
            source_sq += (double)seg[s].source[i] * seg[s].source[i];
        }
    /* a zero source: zero is the only vector of its norm, and it is orthogonal to it */
    double coef = source_sq > 0 ? dot / source_sq : 0;
    for (int s = 0; s < n_seg; s++)
        for (size_t i = 0; i < seg[s].n; i++) {
            double w = seg[s].replica[i] - coef * seg[s].source[i];
            seg[s].replica[i] = (float)w;
            result_sq += w * w;
        }
    if (result_sq <= 0 || !isfinite(result_sq) || !isfinite(source_sq))
        return up_error("orthogonal init: no direction orthogonal to the source was found; expected finite weights "
                        "with more than one element");
    double rescale = sqrt(source_sq / result_sq);
    for (int s = 0; s < n_seg; s++)
        for (size_t i = 0; i < seg[s].n; i++) seg[s].replica[i] = (float)(seg[s].replica[i] * rescale);
    return 0;
}

/* ---- SVD of a row-major matrix: A (rows x cols) = U diag(s) Vt, U rows x k, Vt k x cols ----
 * LAPACK is column-major: the row-major buffer is A^T (cols x rows) to it. Its SVD
 * A^T = U1 S VT1 gives A = VT1^T S U1^T, and VT1 (k x rows, column-major) has exactly the
 * memory of U (rows x k, row-major), U1 that of Vt. So no transposes are needed. */
typedef struct {
    int rows, cols, k;
    double *u;  /* rows x k */
    double *s;  /* k, descending */
    double *vt; /* k x cols */
} Svd;

static void svd_free(Svd *svd) {
    free(svd->u), free(svd->s), free(svd->vt);
    memset(svd, 0, sizeof *svd);
}

static int svd_compute(const float *a, int rows, int cols, Svd *svd) {
    memset(svd, 0, sizeof *svd);
    if (!all_finite(a, (size_t)rows * cols))
        return up_error("SVD init: matrix (%d x %d) has non-finite values; expected finite weights", rows, cols);
    int k = rows < cols ? rows : cols, m = cols, n = rows, info = 0, lwork = -1;
    double *work_a = xmalloc((size_t)rows * cols * sizeof(double));
    for (size_t i = 0; i < (size_t)rows * cols; i++) work_a[i] = a[i];
    svd->rows = rows, svd->cols = cols, svd->k = k;
    svd->s = xmalloc((size_t)k * sizeof(double));
    svd->vt = xmalloc((size_t)k * cols * sizeof(double)); /* LAPACK's U */
    svd->u = xmalloc((size_t)rows * k * sizeof(double));  /* LAPACK's VT */
    int *iwork = xmalloc((size_t)8 * k * sizeof(int));
    double query = 0;
    dgesdd_("S", &m, &n, work_a, &m, svd->s, svd->vt, &m, svd->u, &k, &query, &lwork, iwork, &info, 1);
    lwork = info == 0 && query > 0 && query < 2e9 ? (int)query : 0;
    double *work = lwork ? xmalloc((size_t)lwork * sizeof(double)) : NULL;
    if (lwork) dgesdd_("S", &m, &n, work_a, &m, svd->s, svd->vt, &m, svd->u, &k, work, &lwork, iwork, &info, 1);
    free(work), free(iwork), free(work_a);
    if (!lwork || info != 0) {
        svd_free(svd);
        return up_error("SVD init: LAPACK dgesdd failed on a %d x %d matrix (info %d); expected a well-formed matrix",
                        rows, cols, info);
    }
    return 0;
}

/* out (rows x cols, double) = U diag(s) Vt for the given singular values */
static void svd_reconstruct(const Svd *svd, const double *s, double *out) {
    double *us = xmalloc((size_t)svd->rows * svd->k * sizeof(double));
    for (int i = 0; i < svd->rows; i++)
        for (int j = 0; j < svd->k; j++) us[(size_t)i * svd->k + j] = svd->u[(size_t)i * svd->k + j] * s[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, svd->rows, svd->cols, svd->k, 1.0, us, svd->k, svd->vt,
                svd->cols, 0.0, out, svd->cols);
    free(us);
}

static void store_floats(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* ======================================================================================
 * Expert-level methods
 * ====================================================================================== */

typedef struct {
    float *gate, *up, *down;
    int n_experts, C, F;
} Layer;

/* matrix m (0 gate, 1 up, 2 down) of expert e; each is F*C floats, contiguous */
static float *expert_matrix(const Layer *layer, int m, int e) {
    float *base = m == 0 ? layer->gate : m == 1 ? layer->up : layer->down;
    return base + (size_t)e * layer->F * layer->C;
}
static int matrix_rows(const Layer *layer, int m) { return m == 2 ? layer->C : layer->F; }
static int matrix_cols(const Layer *layer, int m) { return m == 2 ? layer->F : layer->C; }

static int expert_noise(const Layer *layer, const float *p, int source, int replica, Rng *rng) {
    size_t n = (size_t)layer->F * layer->C;
    for (int m = 0; m < 3; m++)
        add_relative_noise(expert_matrix(layer, m, replica), expert_matrix(layer, m, source), n, p[0], rng);
    return 0;
}

/* one fresh value of matrix m for drop's init kind; std_source is the source matrix's std */
static float drop_value(const Layer *layer, int m, int kind, double std_source, Rng *rng) {
    if (kind == DROP_INIT_XAVIER) {
        double bound = sqrt(6.0 / (layer->C + layer->F));
        return (float)((2.0 * rng_uniform(rng) - 1.0) * bound);
    }
    if (kind == DROP_INIT_KAIMING) return (float)(sqrt(2.0 / matrix_cols(layer, m)) * rng_normal(rng));
    return (float)(std_source * rng_normal(rng));
}

static int expert_drop(const Layer *layer, const float *p, int source, int replica, Rng *rng) {
    int F = layer->F, C = layer->C, kind = (int)p[1];
    size_t n = (size_t)F * C, count = (size_t)lround((double)p[0] * F);
    double std_source[3];
    for (int m = 0; m < 3; m++) std_source[m] = std_of(expert_matrix(layer, m, source), n);
    size_t *order = random_order((size_t)F, count, rng);
    float *gate = expert_matrix(layer, 0, replica), *up = expert_matrix(layer, 1, replica);
    float *down = expert_matrix(layer, 2, replica);
    for (size_t i = 0; i < count; i++) {
        size_t f = order[i];
        for (int c = 0; c < C; c++) gate[f * C + c] = drop_value(layer, 0, kind, std_source[0], rng);
        for (int c = 0; c < C; c++) up[f * C + c] = drop_value(layer, 1, kind, std_source[1], rng);
        for (int c = 0; c < C; c++) down[(size_t)c * F + f] = drop_value(layer, 2, kind, std_source[2], rng);
    }
    free(order);
    return 0;
}

static int expert_shuffle(const Layer *layer, int source, int replica, Rng *rng) {
    int F = layer->F, C = layer->C;
    size_t *perm = random_order((size_t)F, (size_t)F, rng);
    const float *src_gate = expert_matrix(layer, 0, source), *src_up = expert_matrix(layer, 1, source);
    const float *src_down = expert_matrix(layer, 2, source);
    float *gate = expert_matrix(layer, 0, replica), *up = expert_matrix(layer, 1, replica);
    float *down = expert_matrix(layer, 2, replica);
    /* replica unit f = source unit perm[f]; reading the untouched source avoids a temporary */
    for (int f = 0; f < F; f++) {
        memcpy(gate + (size_t)f * C, src_gate + perm[f] * C, (size_t)C * sizeof(float));
        memcpy(up + (size_t)f * C, src_up + perm[f] * C, (size_t)C * sizeof(float));
        for (int c = 0; c < C; c++) down[(size_t)c * F + f] = src_down[(size_t)c * F + perm[f]];
    }
    free(perm);
    return 0;
}

static int expert_interpolate(const Layer *layer, const float *p, int source, int replica) {
    int neighbour = init_neighbour(source);
    size_t n = (size_t)layer->F * layer->C;
    for (int m = 0; m < 3; m++)
        interpolate(expert_matrix(layer, m, replica), expert_matrix(layer, m, source),
                    expert_matrix(layer, m, neighbour), n, p[0]);
    return 0;
}

static int expert_orthogonal(const Layer *layer, int source, int replica, Rng *rng) {
    size_t n = (size_t)layer->F * layer->C;
    Segment seg[3];
    double scale[3];
    for (int m = 0; m < 3; m++) {
        seg[m] = (Segment){expert_matrix(layer, m, source), expert_matrix(layer, m, replica), n};
        scale[m] = rms_of(seg[m].source, n);
        if (scale[m] <= 0) scale[m] = 1; /* a zero matrix still gets a direction */
    }
    return orthogonalize(seg, 3, scale, rng);
}

static int expert_scaled(const Layer *layer, const float *p, int source, int replica) {
    size_t n = (size_t)layer->F * layer->C;
    for (int m = 0; m < 3; m++) scale_copy(expert_matrix(layer, m, replica), expert_matrix(layer, m, source), n, p[0]);
    return 0;
}

static int svd_perturb_matrix(const float *source, float *replica, int rows, int cols, float sigma, float drop,
                              Rng *rng) {
    Svd svd;
    if (svd_compute(source, rows, cols, &svd) != 0) return -1;
    int k = svd.k, n_drop = (int)lround((double)drop * k);
    double *s = xmalloc((size_t)k * sizeof(double)), *out = xmalloc((size_t)rows * cols * sizeof(double));
    /* every z_i is drawn, dropped or not, so the stream does not depend on drop */
    for (int i = 0; i < k; i++) s[i] = svd.s[i] * (1.0 + sigma * (double)rng_normal(rng));
    for (int i = k - n_drop; i < k; i++) s[i] = 0;
    svd_reconstruct(&svd, s, out);
    store_floats(replica, out, (size_t)rows * cols);
    free(s), free(out);
    svd_free(&svd);
    return 0;
}

static int expert_svd_perturb(const Layer *layer, const float *p, int source, int replica, Rng *rng) {
    for (int m = 0; m < 3; m++)
        if (svd_perturb_matrix(expert_matrix(layer, m, source), expert_matrix(layer, m, replica),
                               matrix_rows(layer, m), matrix_cols(layer, m), p[0], p[1], rng) != 0)
            return -1;
    return 0;
}

/* b := (I - Uk Uk^T) b (I - Vk Vk^T): Uk the first `keep` columns of U, Vk^T the first
 * `keep` rows of Vt, so b no longer touches the kept singular subspaces. */
static void project_off(const Svd *svd, int keep, double *b) {
    int rows = svd->rows, cols = svd->cols, k = svd->k;
    if (keep == 0) return;
    double *left = xmalloc((size_t)keep * cols * sizeof(double));
    double *right = xmalloc((size_t)rows * keep * sizeof(double));
    /* left = Uk^T b; b -= Uk left */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keep, cols, rows, 1.0, svd->u, k, b, cols, 0.0, left, cols);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, keep, -1.0, svd->u, k, left, cols, 1.0, b,
                cols);
    /* right = b Vk; b -= right Vk^T */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keep, cols, 1.0, b, cols, svd->vt, cols, 0.0, right,
                keep);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, keep, -1.0, right, keep, svd->vt, cols, 1.0, b,
                cols);
    free(left), free(right);
}

static int svd_mix_matrix(const float *source, const float *neighbour, float *replica, int rows, int cols,
                          float ratio) {
    Svd own, other;
    if (svd_compute(source, rows, cols, &own) != 0) return -1;
    if (svd_compute(neighbour, rows, cols, &other) != 0) return svd_free(&own), -1;
    int k = own.k, keep = k - (int)lround((double)ratio * k);
    size_t n = (size_t)rows * cols;
    double *s = xmalloc((size_t)k * sizeof(double)), *top = xmalloc(n * sizeof(double));
    double *bottom = xmalloc(n * sizeof(double));
    for (int i = 0; i < k; i++) s[i] = i < keep ? own.s[i] : 0;
    svd_reconstruct(&own, s, top);
    for (int i = 0; i < k; i++) s[i] = i < keep ? 0 : other.s[i];
    svd_reconstruct(&other, s, bottom);
    project_off(&own, keep, bottom);
    for (size_t i = 0; i < n; i++) replica[i] = (float)(top[i] + bottom[i]);
    free(s), free(top), free(bottom);
    svd_free(&own), svd_free(&other);
    return 0;
}

static int expert_svd_mix(const Layer *layer, const float *p, int source, int replica) {
    int neighbour = init_neighbour(source);
    for (int m = 0; m < 3; m++)
        if (svd_mix_matrix(expert_matrix(layer, m, source), expert_matrix(layer, m, neighbour),
                           expert_matrix(layer, m, replica), matrix_rows(layer, m), matrix_cols(layer, m), p[0]) != 0)
            return -1;
    return 0;
}

/* ---- sparse coding ---- */

/* hidden unit f of expert e as one vector [gate row, up row, down column] (length 3C) */
static void unit_get(const Layer *layer, int e, int f, float *x) {
    int C = layer->C, F = layer->F;
    memcpy(x, expert_matrix(layer, 0, e) + (size_t)f * C, (size_t)C * sizeof(float));
    memcpy(x + C, expert_matrix(layer, 1, e) + (size_t)f * C, (size_t)C * sizeof(float));
    const float *down = expert_matrix(layer, 2, e);
    for (int c = 0; c < C; c++) x[2 * C + c] = down[(size_t)c * F + f];
}

static void unit_set(const Layer *layer, int e, int f, const float *x) {
    int C = layer->C, F = layer->F;
    memcpy(expert_matrix(layer, 0, e) + (size_t)f * C, x, (size_t)C * sizeof(float));
    memcpy(expert_matrix(layer, 1, e) + (size_t)f * C, x + C, (size_t)C * sizeof(float));
    float *down = expert_matrix(layer, 2, e);
    for (int c = 0; c < C; c++) down[(size_t)c * F + f] = x[2 * C + c];
}

/* scales x (length d) to unit norm; returns the old norm (0 leaves x as is) */
static double normalize(float *x, int d) {
    double sq = 0;
    for (int i = 0; i < d; i++) sq += (double)x[i] * x[i];
    double norm = sqrt(sq);
    if (norm > 0)
        for (int i = 0; i < d; i++) x[i] = (float)(x[i] / norm);
    return norm;
}

/* largest eigenvalue of M^T M for m (rows x cols), by power iteration through M (two
 * matrix-vector products per step instead of forming the cols x cols product) */
static double top_gram_eigenvalue(const float *m, int rows, int cols, Rng *rng) {
    float *v = xmalloc((size_t)cols * sizeof(float)), *w = xmalloc((size_t)rows * sizeof(float));
    for (int i = 0; i < cols; i++) v[i] = rng_normal(rng);
    normalize(v, cols);
    double value = 0;
    for (int it = 0; it < 50; it++) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, m, cols, v, 1, 0.0f, w, 1);
        cblas_sgemv(CblasRowMajor, CblasTrans, rows, cols, 1.0f, m, cols, w, 1, 0.0f, v, 1);
        value = normalize(v, cols);
        if (value <= 0) break;
    }
    free(v), free(w);
    return value;
}

/* grad (n x K) = (a D - x) D^T, the gradient of 0.5||x - a D||^2 in the codes a. Two ways
 * to the same value: a G - x D^T with the precomputed G = D D^T and xd = x D^T costs n K^2
 * per step, going through the residual costs 2 n K d; the cheaper one is taken. */
static void code_gradient(const float *dict, const float *gram, const float *xd, int K, int d, const float *x, int n,
                          const float *a, float *residual, float *grad) {
    if (!gram) {
        memcpy(residual, x, (size_t)n * d * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, K, 1.0f, a, K, dict, d, -1.0f, residual, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, d, 1.0f, residual, d, dict, d, 0.0f, grad, K);
    } else {
        memcpy(grad, xd, (size_t)n * K * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, K, K, 1.0f, a, K, gram, K, -1.0f, grad, K);
    }
}

/* `steps` ISTA steps on codes a (n x K, warm start) of x (n x d) in dictionary dict (K x d):
 * a <- soft(a - grad / L, lambda / L), L >= the top eigenvalue of G = D D^T. */
static void ista(const float *dict, int K, int d, const float *x, int n, float *a, float lambda, int steps, Rng *rng) {
    int direct = 2 * (size_t)d >= (size_t)K; /* see code_gradient */
    float *gram = direct ? xmalloc((size_t)K * K * sizeof(float)) : NULL;
    float *xd = direct ? xmalloc((size_t)n * K * sizeof(float)) : NULL;
    float *grad = xmalloc((size_t)n * K * sizeof(float)), *residual = xmalloc((size_t)n * d * sizeof(float));
    if (direct) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, K, d, 1.0f, dict, d, dict, d, 0.0f, gram, K);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, d, 1.0f, x, d, dict, d, 0.0f, xd, K);
    }
    /* 10% margin: power iteration approaches the top eigenvalue from below */
    double lipschitz = 1.1 * top_gram_eigenvalue(dict, K, d, rng);
    if (!(lipschitz > 0)) lipschitz = 1;
    float step = (float)(1.0 / lipschitz), threshold = (float)(lambda / lipschitz);
    for (int it = 0; it < steps; it++) {
        code_gradient(dict, gram, xd, K, d, x, n, a, residual, grad);
        for (size_t i = 0; i < (size_t)n * K; i++) {
            float v = a[i] - step * grad[i];
            a[i] = v > threshold ? v - threshold : v < -threshold ? v + threshold : 0.0f;
        }
    }
    free(gram), free(xd), free(grad), free(residual);
}

/* one gradient step on the dictionary for 0.5||x - a D||^2, then atoms back to unit norm;
 * an atom that went to zero (never used) is re-seeded from a random sample */
static void dictionary_step(float *dict, int K, int d, const float *x, int n, const float *a, Rng *rng) {
    float *residual = xmalloc((size_t)n * d * sizeof(float));
    memcpy(residual, x, (size_t)n * d * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, K, -1.0f, a, K, dict, d, 1.0f, residual, d);
    double lipschitz = 1.1 * top_gram_eigenvalue(a, n, K, rng);
    if (lipschitz > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, d, n, (float)(1.0 / lipschitz), a, K, residual, d, 1.0f,
                    dict, d);
    for (int k = 0; k < K; k++)
        if (normalize(dict + (size_t)k * d, d) < 1e-12) {
            memcpy(dict + (size_t)k * d, x + (size_t)rng_below(rng, (uint64_t)n) * d, (size_t)d * sizeof(float));
            normalize(dict + (size_t)k * d, d);
        }
    free(residual);
}

/* unit-norm samples of the hidden units of experts 0..replica-1 (rows of the result); a
 * replica placed before its source (not what plan.h produces) samples 0..source instead */
static float *sample_units(const Layer *layer, int source, int replica, int samples, int *n_out, Rng *rng) {
    int F = layer->F, d = 3 * layer->C, n_pool_experts = replica > source ? replica : source + 1;
    size_t pool = (size_t)n_pool_experts * F, n = (size_t)samples < pool ? (size_t)samples : pool;
    size_t *order = random_order(pool, n, rng);
    float *x = xmalloc(n * d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        unit_get(layer, (int)(order[i] / F), (int)(order[i] % F), x + i * d);
        normalize(x + i * d, d);
    }
    free(order);
    *n_out = (int)n;
    return x;
}

static int expert_sparse_code(const Layer *layer, const float *p, int source, int replica, Rng *rng) {
    int F = layer->F, d = 3 * layer->C, n = 0, iters = (int)p[2];
    float lambda = p[1];
    for (int m = 0; m < 3; m++)
        if (!all_finite(expert_matrix(layer, m, source), (size_t)F * layer->C))
            return up_error("sparse-code init: expert %d has non-finite weights; expected finite weights", source);
    float *x = sample_units(layer, source, replica, (int)p[3], &n, rng);
    int K = (int)p[0] < n ? (int)p[0] : n;
    /* atoms start as the first K samples (already in random order) */
    float *dict = xmalloc((size_t)K * d * sizeof(float)), *codes = xcalloc((size_t)n * K, sizeof(float));
    memcpy(dict, x, (size_t)K * d * sizeof(float));
    for (int it = 0; it < iters; it++) {
        ista(dict, K, d, x, n, codes, lambda, 10, rng);
        dictionary_step(dict, K, d, x, n, codes, rng);
    }
    float *units = xmalloc((size_t)F * d * sizeof(float)), *unit_codes = xcalloc((size_t)F * K, sizeof(float));
    double *norms = xmalloc((size_t)F * sizeof(double));
    for (int f = 0; f < F; f++) {
        unit_get(layer, source, f, units + (size_t)f * d);
        norms[f] = normalize(units + (size_t)f * d, d);
    }
    ista(dict, K, d, units, F, unit_codes, lambda, 50, rng);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, d, K, 1.0f, unit_codes, K, dict, d, 0.0f, units, d);
    for (int f = 0; f < F; f++) {
        for (int i = 0; i < d; i++) units[(size_t)f * d + i] = (float)(units[(size_t)f * d + i] * norms[f]);
        unit_set(layer, replica, f, units + (size_t)f * d);
    }
    free(x), free(dict), free(codes), free(units), free(unit_codes), free(norms);
    return 0;
}

static int check_layout(const char *what, int n_experts, int C, int F, int source, int replica, const void *rng) {
    if (n_experts < 2 || C < 1 || F < 1)
        return up_error("%s: layout %d experts, C %d, F %d; expected >= 2 experts (an original and a replica) and "
                        "positive sizes",
                        what, n_experts, C, F);
    if (source < 0 || source >= n_experts || replica < 0 || replica >= n_experts || source == replica)
        return up_error("%s: source %d, replica %d; expected two different experts in 0..%d", what, source, replica,
                        n_experts - 1);
    if (!rng) return up_error("%s: no random number generator; expected an Rng", what);
    return 0;
}

int expert_init_apply(const ExpertInit *init, float *gate, float *up, float *down, int n_experts, int C, int F,
                      int source, int replica, Rng *rng) {
    if (!init || !gate || !up || !down) return up_error("expert init: missing weights; expected gate, up and down");
    if (validate("expert init", EXPERT_METHODS, EXPERT_INIT_METHODS, init->method, init->p) != 0) return -1;
    if (check_layout("expert init", n_experts, C, F, source, replica, rng) != 0) return -1;
    Layer layer = {gate, up, down, n_experts, C, F};
    const float *p = init->p;
    switch ((ExpertInitMethod)init->method) {
    case EXPERT_INIT_NOISE: return expert_noise(&layer, p, source, replica, rng);
    case EXPERT_INIT_DROP: return expert_drop(&layer, p, source, replica, rng);
    case EXPERT_INIT_SHUFFLE: return expert_shuffle(&layer, source, replica, rng);
    case EXPERT_INIT_INTERPOLATE: return expert_interpolate(&layer, p, source, replica);
    case EXPERT_INIT_ORTHOGONAL: return expert_orthogonal(&layer, source, replica, rng);
    case EXPERT_INIT_SCALED: return expert_scaled(&layer, p, source, replica);
    case EXPERT_INIT_SVD_PERTURB: return expert_svd_perturb(&layer, p, source, replica, rng);
    case EXPERT_INIT_SVD_MIX: return expert_svd_mix(&layer, p, source, replica);
    case EXPERT_INIT_SPARSE_CODE: return expert_sparse_code(&layer, p, source, replica, rng);
    case EXPERT_INIT_COPY:
    default: return 0;
    }
}

/* ======================================================================================
 * Router-level methods
 * ====================================================================================== */

static int router_svd_perturb(float *router, int n_experts, int C, int replica, float sigma, Rng *rng) {
    Svd svd;
    if (svd_compute(router, n_experts, C, &svd) != 0) return -1;
    double *row = xcalloc((size_t)C, sizeof(double));
    /* only the replica's row of U diag(s') Vt is needed */
    for (int j = 0; j < svd.k; j++) {
        double weight = svd.u[(size_t)replica * svd.k + j] * svd.s[j] * (1.0 + sigma * (double)rng_normal(rng));
        for (int c = 0; c < C; c++) row[c] += weight * svd.vt[(size_t)j * C + c];
    }
    store_floats(router + (size_t)replica * C, row, (size_t)C);
    free(row);
    svd_free(&svd);
    return 0;
}

int router_init_apply(const RouterInit *init, float *router, float *bias, int n_experts, int C, int source,
                      int replica, Rng *rng) {
    if (!init || !router) return up_error("router init: missing router weight; expected an (n_experts, C) matrix");
    if (validate("router init", ROUTER_METHODS, ROUTER_INIT_METHODS, init->method, init->p) != 0) return -1;
    if (check_layout("router init", n_experts, C, 1, source, replica, rng) != 0) return -1;
    const float *src = router + (size_t)source * C, p0 = init->p[0];
    float *row = router + (size_t)replica * C;
    switch ((RouterInitMethod)init->method) {
    case ROUTER_INIT_NOISE: add_relative_noise(row, src, (size_t)C, p0, rng); return 0;
    case ROUTER_INIT_INTERPOLATE:
        interpolate(row, src, router + (size_t)init_neighbour(source) * C, (size_t)C, p0);
        return 0;
    case ROUTER_INIT_SCALED: scale_copy(row, src, (size_t)C, p0); return 0;
    case ROUTER_INIT_PERTURB_NEW:
        add_relative_noise(row, src, (size_t)C, p0, rng);
        if (bias) bias[replica] += p0 * rng_normal(rng);
        return 0;
    case ROUTER_INIT_ORTHOGONAL: {
        Segment seg = {src, row, (size_t)C};
        double scale = 1;
        return orthogonalize(&seg, 1, &scale, rng);
    }
    case ROUTER_INIT_ADVERSARIAL: scale_copy(row, src, (size_t)C, -p0); return 0;
    case ROUTER_INIT_TEMPERATURE:
        for (int c = 0; c < C; c++) row[c] = src[c] / p0;
        return 0;
    case ROUTER_INIT_SVD_PERTURB: return router_svd_perturb(router, n_experts, C, replica, p0, rng);
    case ROUTER_INIT_COPY:
    case ROUTER_INIT_BIAS_ONLY: /* the grower's bias noise is the whole method */
    default: return 0;
    }
}
