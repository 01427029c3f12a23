/* test_grow_init.c - every replica initialization heuristic against its defining property,
 * plus parsing, --help text, argument checks, "only the replica is written" and determinism. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grow/init.h"
#include "test.h"
#include "util.h"

/* ---- a small MoE layer with random experts; replicas start as exact copies ---- */

typedef struct {
    int n, C, F;
    float *gate, *up, *down, *router, *bias;
} TestLayer;

static size_t matrix_size(const TestLayer *t) { return (size_t)t->F * t->C; }
static float *mat(const TestLayer *t, int m, int e) {
    return (m == 0 ? t->gate : m == 1 ? t->up : t->down) + (size_t)e * matrix_size(t);
}

static void fill_normal(float *x, size_t n, float std, Rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

static void copy_expert(TestLayer *t, int source, int replica) {
    for (int m = 0; m < 3; m++) memcpy(mat(t, m, replica), mat(t, m, source), matrix_size(t) * sizeof(float));
    memcpy(t->router + (size_t)replica * t->C, t->router + (size_t)source * t->C, (size_t)t->C * sizeof(float));
    t->bias[replica] = t->bias[source];
}

/* n_old random originals (matrices with different scales), then replica e copies e - n_old */
static TestLayer layer_make(int n_old, int n_new, int C, int F, uint64_t seed) {
    TestLayer t = {n_new, C, F, NULL, NULL, NULL, NULL, NULL};
    Rng rng;
    rng_seed(&rng, seed);
    size_t n = (size_t)n_new * F * C;
    t.gate = xcalloc(n, sizeof(float)), t.up = xcalloc(n, sizeof(float)), t.down = xcalloc(n, sizeof(float));
    t.router = xcalloc((size_t)n_new * C, sizeof(float)), t.bias = xcalloc((size_t)n_new, sizeof(float));
    for (int e = 0; e < n_old; e++) {
        fill_normal(mat(&t, 0, e), matrix_size(&t), 0.02f, &rng);
        fill_normal(mat(&t, 1, e), matrix_size(&t), 0.03f, &rng);
        fill_normal(mat(&t, 2, e), matrix_size(&t), 0.01f, &rng);
        fill_normal(t.router + (size_t)e * C, (size_t)C, 0.1f, &rng);
        t.bias[e] = 0.01f * rng_normal(&rng);
    }
    for (int e = n_old; e < n_new; e++) copy_expert(&t, (e - n_old) % n_old, e);
    return t;
}

static TestLayer layer_clone(const TestLayer *t) {
    TestLayer c = *t;
    size_t n = (size_t)t->n * t->F * t->C;
    c.gate = xmalloc(n * sizeof(float)), c.up = xmalloc(n * sizeof(float)), c.down = xmalloc(n * sizeof(float));
    c.router = xmalloc((size_t)t->n * t->C * sizeof(float)), c.bias = xmalloc((size_t)t->n * sizeof(float));
    memcpy(c.gate, t->gate, n * sizeof(float)), memcpy(c.up, t->up, n * sizeof(float));
    memcpy(c.down, t->down, n * sizeof(float));
    memcpy(c.router, t->router, (size_t)t->n * t->C * sizeof(float));
    memcpy(c.bias, t->bias, (size_t)t->n * sizeof(float));
    return c;
}

static void layer_free(TestLayer *t) {
    free(t->gate), free(t->up), free(t->down), free(t->router), free(t->bias);
}

static int expert_apply(const char *spec, TestLayer *t, int source, int replica, uint64_t seed) {
    ExpertInit init;
    if (expert_init_parse(spec, &init) != 0) return -1;
    Rng rng;
    rng_seed(&rng, seed);
    return expert_init_apply(&init, t->gate, t->up, t->down, t->n, t->C, t->F, source, replica, &rng);
}

static int router_apply(const char *spec, TestLayer *t, int source, int replica, uint64_t seed) {
    RouterInit init;
    if (router_init_parse(spec, &init) != 0) return -1;
    Rng rng;
    rng_seed(&rng, seed);
    return router_init_apply(&init, t->router, t->bias, t->n, t->C, source, replica, &rng);
}

static int same_floats(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static int expert_equal(const TestLayer *a, int ea, const TestLayer *b, int eb) {
    for (int m = 0; m < 3; m++)
        if (!same_floats(mat(a, m, ea), mat(b, m, eb), matrix_size(a))) return 0;
    return 1;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)a[i] * b[i];
    return sum;
}

static double expert_dot(const TestLayer *t, int a, int b) {
    double sum = 0;
    for (int m = 0; m < 3; m++) sum += dot_d(mat(t, m, a), mat(t, m, b), matrix_size(t));
    return sum;
}

static double std_d(const float *x, size_t n) {
    double mean = 0, sq = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) sq += (x[i] - mean) * (x[i] - mean);
    return sqrt(sq / (double)n);
}

/* every expert except `replica` and every router row/bias except `replica` is bit-identical */
static int others_untouched(const TestLayer *before, const TestLayer *after, int replica) {
    for (int e = 0; e < before->n; e++) {
        if (e == replica) continue;
        if (!expert_equal(before, e, after, e)) return 0;
        if (!same_floats(before->router + (size_t)e * before->C, after->router + (size_t)e * before->C,
                         (size_t)before->C))
            return 0;
        if (before->bias[e] != after->bias[e]) return 0;
    }
    return 1;
}

/* SwiGLU expert output y = down (silu(gate x) * (up x)) in double */
static void expert_forward(const TestLayer *t, int e, const float *x, double *y) {
    int C = t->C, F = t->F;
    for (int c = 0; c < C; c++) y[c] = 0;
    for (int f = 0; f < F; f++) {
        double g = dot_d(mat(t, 0, e) + (size_t)f * C, x, (size_t)C);
        double u = dot_d(mat(t, 1, e) + (size_t)f * C, x, (size_t)C);
        double h = g / (1.0 + exp(-g)) * u;
        for (int c = 0; c < C; c++) y[c] += mat(t, 2, e)[(size_t)c * F + f] * h;
    }
}

/* does hidden unit f of expert a equal unit g of expert b in all three matrices? */
static int unit_equal(const TestLayer *a, int ea, int f, const TestLayer *b, int eb, int g) {
    int C = a->C, F = a->F;
    if (!same_floats(mat(a, 0, ea) + (size_t)f * C, mat(b, 0, eb) + (size_t)g * C, (size_t)C)) return 0;
    if (!same_floats(mat(a, 1, ea) + (size_t)f * C, mat(b, 1, eb) + (size_t)g * C, (size_t)C)) return 0;
    for (int c = 0; c < C; c++)
        if (mat(a, 2, ea)[(size_t)c * F + f] != mat(b, 2, eb)[(size_t)c * F + g]) return 0;
    return 1;
}

/* ---- parsing ---- */

TEST(grow_init_parse_defaults) {
    ExpertInit e;
    CHECK(expert_init_parse("noise", &e) == 0 && e.method == EXPERT_INIT_NOISE);
    CHECK(e.p[0] == 0.01f && strcmp(e.name, "noise") == 0);
    CHECK(expert_init_parse("drop", &e) == 0 && e.p[0] == 0.5f && e.p[1] == DROP_INIT_XAVIER);
    CHECK(expert_init_parse("sparse-code", &e) == 0 && e.p[0] == 1024 && e.p[1] == 0.1f);
    CHECK(expert_init_parse("svd-perturb", &e) == 0 && e.p[0] == 0.05f && e.p[1] == 0.1f);
    CHECK(expert_init_parse("svd-mix", &e) == 0 && e.p[0] == 0.3f);
    RouterInit r;
    CHECK(router_init_parse("temperature", &r) == 0 && r.method == ROUTER_INIT_TEMPERATURE && r.p[0] == 2.0f);
    CHECK(router_init_parse("adversarial", &r) == 0 && r.p[0] == 1.0f);
    CHECK(router_init_parse("bias-only", &r) == 0 && r.method == ROUTER_INIT_BIAS_ONLY);
    ExpertInit zero = {0};
    CHECK(zero.method == EXPERT_INIT_COPY); /* a zeroed struct means plain copy */
}

TEST(grow_init_parse_params) {
    ExpertInit e;
    CHECK(expert_init_parse("drop:frac=0.3,init=kaiming", &e) == 0 && e.p[0] == 0.3f && e.p[1] == DROP_INIT_KAIMING);
    CHECK(expert_init_parse("drop:init=normal", &e) == 0 && e.p[0] == 0.5f && e.p[1] == DROP_INIT_NORMAL);
    CHECK(expert_init_parse("svd-perturb:drop=0.2,sigma=0", &e) == 0 && e.p[0] == 0 && e.p[1] == 0.2f);
    CHECK(expert_init_parse("sparse-code:atoms=64,lambda=0.05,iters=3,samples=100", &e) == 0);
    CHECK(e.p[0] == 64 && e.p[1] == 0.05f && e.p[2] == 3 && e.p[3] == 100);
    RouterInit r;
    CHECK(router_init_parse("perturb-new:sigma=0.02", &r) == 0 && r.p[0] == 0.02f);
}

TEST(grow_init_parse_unknown_method_lists_valid) {
    ExpertInit e;
    e.method = 77;
    CHECK(expert_init_parse("gaussian", &e) == -1);
    CHECK(e.method == 77); /* untouched on error */
    const char *msg = up_last_error();
    CHECK_MSG(strstr(msg, "gaussian") && strstr(msg, "copy") && strstr(msg, "sparse-code") && strstr(msg, "svd-mix"),
              "message: %s", msg);
    RouterInit r;
    CHECK(router_init_parse("shuffle", &r) == -1);
    msg = up_last_error();
    CHECK_MSG(strstr(msg, "temperature") && strstr(msg, "adversarial") && strstr(msg, "bias-only"), "message: %s", msg);
    CHECK(expert_init_parse("", &e) == -1 && expert_init_parse(NULL, &e) == -1);
    CHECK(expert_init_parse("copy", NULL) == -1);
}

TEST(grow_init_parse_bad_key) {
    ExpertInit e;
    CHECK(expert_init_parse("noise:alpha=1", &e) == -1);
    CHECK_MSG(strstr(up_last_error(), "alpha") && strstr(up_last_error(), "sigma"), "message: %s", up_last_error());
    CHECK(expert_init_parse("copy:sigma=1", &e) == -1);
    CHECK_MSG(strstr(up_last_error(), "no parameters"), "message: %s", up_last_error());
    CHECK(expert_init_parse("noise:sigma", &e) == -1);  /* no '=' */
    CHECK(expert_init_parse("noise:=0.1", &e) == -1);   /* no key */
    CHECK(expert_init_parse("noise:", &e) == -1);       /* empty item */
    CHECK(expert_init_parse("drop:frac=0.1,", &e) == -1);
    RouterInit r;
    CHECK(router_init_parse("temperature:beta=2", &r) == -1);
    CHECK_MSG(strstr(up_last_error(), "tau"), "message: %s", up_last_error());
}

TEST(grow_init_parse_bad_value) {
    ExpertInit e;
    const char *bad[] = {"noise:sigma=abc", "noise:sigma=-1", "noise:sigma=", "noise:sigma=0.1x", "noise:sigma=nan",
                         "noise:sigma=1e999", "drop:frac=1.5", "drop:init=he", "scaled:factor=0",
                         "sparse-code:atoms=1.5", "sparse-code:atoms=0", "interpolate:alpha=-0.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(expert_init_parse(bad[i], &e) == -1, "%s", bad[i]);
    CHECK(expert_init_parse("drop:init=he", &e) == -1);
    CHECK_MSG(strstr(up_last_error(), "xavier") && strstr(up_last_error(), "kaiming"), "message: %s", up_last_error());
    CHECK(expert_init_parse("drop:frac=1.5", &e) == -1);
    CHECK_MSG(strstr(up_last_error(), "[0, 1]"), "message: %s", up_last_error());
    RouterInit r;
    CHECK(router_init_parse("temperature:tau=0", &r) == -1 && router_init_parse("adversarial:beta=-1", &r) == -1);
    char longspec[400];
    memset(longspec, 'a', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = 0;
    CHECK(expert_init_parse(longspec, &e) == -1);
}

TEST(grow_init_describe_round_trips) {
    const char *expert_specs[] = {"copy", "noise", "drop:frac=0.3,init=normal", "shuffle", "interpolate:alpha=0.25",
                                  "orthogonal", "scaled:factor=1.05", "svd-perturb", "svd-mix", "sparse-code"};
    for (size_t i = 0; i < sizeof expert_specs / sizeof expert_specs[0]; i++) {
        ExpertInit a, b;
        char text[128];
        CHECK(expert_init_parse(expert_specs[i], &a) == 0);
        CHECK(expert_init_describe(&a, text, sizeof text) > 0);
        CHECK_MSG(expert_init_parse(text, &b) == 0 && a.method == b.method && !memcmp(a.p, b.p, sizeof a.p), "%s",
                  text);
    }
    const char *router_specs[] = {"copy", "noise", "interpolate", "bias-only", "scaled", "perturb-new",
                                  "orthogonal", "adversarial", "temperature:tau=0.5", "svd-perturb"};
    for (size_t i = 0; i < sizeof router_specs / sizeof router_specs[0]; i++) {
        RouterInit a, b;
        char text[128];
        CHECK(router_init_parse(router_specs[i], &a) == 0);
        CHECK(router_init_describe(&a, text, sizeof text) > 0);
        CHECK_MSG(router_init_parse(text, &b) == 0 && a.method == b.method && !memcmp(a.p, b.p, sizeof a.p), "%s",
                  text);
    }
    ExpertInit d;
    char text[64];
    CHECK(expert_init_parse("drop:frac=0.7,init=kaiming", &d) == 0);
    expert_init_describe(&d, text, sizeof text);
    CHECK_MSG(strcmp(text, "drop:frac=0.7,init=kaiming") == 0, "%s", text);
}

TEST(grow_init_help_lists_every_method) {
    const char *expert = expert_init_help(), *router = router_init_help();
    const char *expert_names[] = {"copy", "noise", "drop", "shuffle", "interpolate", "orthogonal", "scaled",
                                  "svd-perturb", "svd-mix", "sparse-code", "sigma=0.01", "frac=0.5", "init=xavier",
                                  "alpha=0.5", "factor=0.95", "ratio=0.3", "atoms=1024", "lambda=0.1"};
    for (size_t i = 0; i < sizeof expert_names / sizeof expert_names[0]; i++)
        CHECK_MSG(strstr(expert, expert_names[i]), "expert help lacks %s", expert_names[i]);
    const char *router_names[] = {"copy", "noise", "interpolate", "bias-only", "scaled", "perturb-new", "orthogonal",
                                  "adversarial", "temperature", "svd-perturb", "beta=1", "tau=2", "sigma=0.05"};
    for (size_t i = 0; i < sizeof router_names / sizeof router_names[0]; i++)
        CHECK_MSG(strstr(router, router_names[i]), "router help lacks %s", router_names[i]);
    CHECK(strchr(expert, '\n') && strchr(router, '\n'));
}

/* ---- argument checks ---- */

TEST(grow_init_apply_rejects_bad_arguments) {
    TestLayer t = layer_make(2, 4, 4, 6, 1);
    ExpertInit e = {0};
    Rng rng;
    rng_seed(&rng, 1);
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 1, 1, &rng) == -1);  /* source == replica */
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 4, &rng) == -1);  /* out of range */
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, -1, 2, &rng) == -1);
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, 1, t.C, t.F, 0, 0, &rng) == -1);
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, 0, t.F, 0, 2, &rng) == -1);
    CHECK(expert_init_apply(&e, NULL, t.up, t.down, t.n, t.C, t.F, 0, 2, &rng) == -1);
    CHECK(expert_init_apply(NULL, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 2, &rng) == -1);
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 2, NULL) == -1);
    e.method = 99;
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 2, &rng) == -1);
    CHECK_MSG(strstr(up_last_error(), "sparse-code"), "message: %s", up_last_error());
    e.method = EXPERT_INIT_NOISE, e.p[0] = -1; /* hand-filled, out of range */
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 2, &rng) == -1);
    e.method = EXPERT_INIT_SCALED, e.p[0] = NAN;
    CHECK(expert_init_apply(&e, t.gate, t.up, t.down, t.n, t.C, t.F, 0, 2, &rng) == -1);
    RouterInit r = {0};
    r.method = ROUTER_INIT_TEMPERATURE; /* tau = 0 by hand: division by zero refused */
    CHECK(router_init_apply(&r, t.router, t.bias, t.n, t.C, 0, 2, &rng) == -1);
    CHECK(router_init_apply(&r, NULL, t.bias, t.n, t.C, 0, 2, &rng) == -1);
    /* non-finite weights: the SVD methods refuse instead of handing LAPACK a NaN */
    mat(&t, 0, 0)[3] = NAN;
    CHECK(expert_apply("svd-perturb", &t, 0, 2, 1) == -1);
    CHECK(expert_apply("svd-mix", &t, 1, 3, 1) == -1); /* neighbour 0 is the bad one */
    CHECK(expert_apply("sparse-code", &t, 0, 2, 1) == -1);
    t.router[0] = INFINITY;
    CHECK(router_apply("svd-perturb", &t, 0, 2, 1) == -1);
    layer_free(&t);
}

TEST(grow_init_neighbour_is_an_original) {
    CHECK(init_neighbour(0) == 1 && init_neighbour(1) == 0 && init_neighbour(7) == 6);
    /* for E originals (indices 0..E-1), the neighbour of every original is an original */
    for (int n_old = 2; n_old < 10; n_old++)
        for (int s = 0; s < n_old; s++) CHECK(init_neighbour(s) >= 0 && init_neighbour(s) < n_old);
}

/* ---- expert methods ---- */

TEST(grow_init_only_the_replica_is_written) {
    const char *specs[] = {"copy", "noise", "drop", "shuffle", "interpolate", "orthogonal", "scaled",
                           "svd-perturb", "svd-mix", "sparse-code:atoms=32,iters=2"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        TestLayer t = layer_make(3, 6, 8, 12, 11);
        TestLayer before = layer_clone(&t);
        CHECK_MSG(expert_apply(specs[i], &t, 2, 5, 3) == 0, "%s: %s", specs[i], up_last_error());
        CHECK_MSG(others_untouched(&before, &t, 5), "%s wrote outside the replica", specs[i]);
        CHECK_MSG(same_floats(before.router, t.router, (size_t)t.n * t.C), "%s touched the router", specs[i]);
        CHECK_MSG(i == 0 || !expert_equal(&before, 5, &t, 5), "%s left the replica unchanged", specs[i]);
        layer_free(&t), layer_free(&before);
    }
}

TEST(grow_init_expert_copy_is_identity) {
    TestLayer t = layer_make(2, 4, 8, 12, 2);
    TestLayer before = layer_clone(&t);
    CHECK(expert_apply("copy", &t, 1, 3, 5) == 0);
    CHECK(expert_equal(&t, 3, &before, 3) && expert_equal(&t, 3, &t, 1));
    layer_free(&t), layer_free(&before);
}

TEST(grow_init_expert_noise_is_relative) {
    TestLayer t = layer_make(2, 4, 32, 48, 3);
    CHECK(expert_apply("noise:sigma=0.05", &t, 1, 3, 9) == 0);
    for (int m = 0; m < 3; m++) {
        size_t n = matrix_size(&t);
        float *diff = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) diff[i] = mat(&t, m, 3)[i] - mat(&t, m, 1)[i];
        double expected = 0.05 * std_d(mat(&t, m, 1), n), got = std_d(diff, n);
        /* 1536 draws: the sample std is within a few percent of the target */
        CHECK_MSG(fabs(got / expected - 1) < 0.1, "matrix %d: noise std %g, expected %g", m, got, expected);
        free(diff);
    }
    layer_free(&t);
}

/* units of the replica that differ from the source in any of the three matrices */
static int changed_units(const TestLayer *t, int source, int replica) {
    int changed = 0;
    for (int f = 0; f < t->F; f++) changed += !unit_equal(t, replica, f, t, source, f);
    return changed;
}

TEST(grow_init_expert_drop_exact_fraction) {
    const char *specs[] = {"drop:frac=0.3,init=xavier", "drop:frac=0.5,init=kaiming", "drop:frac=0.7,init=normal",
                           "drop", "drop:frac=0", "drop:frac=1"};
    const int expected[] = {12, 20, 28, 20, 0, 40}; /* round(frac * 40) */
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        TestLayer t = layer_make(2, 4, 16, 40, 4);
        CHECK(expert_apply(specs[i], &t, 0, 2, 17) == 0);
        int changed = changed_units(&t, 0, 2);
        CHECK_MSG(changed == expected[i], "%s: %d units re-initialized, expected %d", specs[i], changed, expected[i]);
        layer_free(&t);
    }
    /* xavier values stay inside the bound sqrt(6 / (C + F)) */
    TestLayer t = layer_make(2, 4, 16, 40, 4);
    CHECK(expert_apply("drop:frac=1,init=xavier", &t, 0, 2, 5) == 0);
    double bound = sqrt(6.0 / (16 + 40)), largest = 0;
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(&t); i++) largest = fmax(largest, fabs(mat(&t, m, 2)[i]));
    CHECK(largest <= bound && largest > 0.8 * bound);
    /* kaiming: down has fan_in F, so its std is sqrt(2 / F) */
    CHECK(expert_apply("drop:frac=1,init=kaiming", &t, 0, 2, 6) == 0);
    CHECK_CLOSE(std_d(mat(&t, 2, 2), matrix_size(&t)) / sqrt(2.0 / 40), 1.0, 0.1);
    CHECK_CLOSE(std_d(mat(&t, 0, 2), matrix_size(&t)) / sqrt(2.0 / 16), 1.0, 0.1);
    layer_free(&t);
}

TEST(grow_init_expert_shuffle_preserves_function) {
    TestLayer t = layer_make(2, 4, 16, 24, 5);
    CHECK(expert_apply("shuffle", &t, 1, 3, 8) == 0);
    CHECK(!expert_equal(&t, 1, &t, 3));
    /* same multiset of hidden units: a bijection replica unit -> source unit */
    int used[24] = {0}, matched = 0;
    for (int f = 0; f < t.F; f++)
        for (int g = 0; g < t.F; g++)
            if (!used[g] && unit_equal(&t, 3, f, &t, 1, g)) {
                used[g] = 1, matched++;
                break;
            }
    CHECK(matched == t.F);
    Rng rng;
    rng_seed(&rng, 99);
    float x[16];
    double y_source[16], y_replica[16];
    fill_normal(x, 16, 1.0f, &rng);
    expert_forward(&t, 1, x, y_source);
    expert_forward(&t, 3, x, y_replica);
    for (int c = 0; c < t.C; c++) CHECK_CLOSE(y_replica[c], y_source[c], 1e-5);
    layer_free(&t);
}

TEST(grow_init_expert_interpolate_exact) {
    TestLayer t = layer_make(3, 6, 8, 12, 6);
    CHECK(expert_apply("interpolate:alpha=0.25", &t, 2, 5, 1) == 0); /* neighbour of 2 is 1 */
    CHECK(expert_apply("interpolate", &t, 0, 3, 1) == 0);            /* neighbour of 0 is 1 */
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(&t); i++) {
            CHECK_CLOSE(mat(&t, m, 5)[i], 0.75f * mat(&t, m, 2)[i] + 0.25f * mat(&t, m, 1)[i], 1e-7);
            CHECK_CLOSE(mat(&t, m, 3)[i], 0.5f * mat(&t, m, 0)[i] + 0.5f * mat(&t, m, 1)[i], 1e-7);
        }
    layer_free(&t);
}

TEST(grow_init_expert_orthogonal) {
    TestLayer t = layer_make(2, 4, 16, 24, 7);
    CHECK(expert_apply("orthogonal", &t, 1, 3, 4) == 0);
    double source_norm = sqrt(expert_dot(&t, 1, 1)), replica_norm = sqrt(expert_dot(&t, 3, 3));
    double cosine = expert_dot(&t, 1, 3) / (source_norm * replica_norm);
    CHECK_MSG(fabs(cosine) < 1e-5, "cosine %g", cosine);
    CHECK_CLOSE(replica_norm, source_norm, 1e-5);
    /* the matrices keep their relative sizes (draws scaled by each matrix's rms) */
    CHECK(std_d(mat(&t, 1, 3), matrix_size(&t)) > 2 * std_d(mat(&t, 2, 3), matrix_size(&t)));
    layer_free(&t);
}

TEST(grow_init_expert_scaled_exact_ratio) {
    TestLayer t = layer_make(2, 4, 8, 12, 8);
    CHECK(expert_apply("scaled", &t, 0, 2, 1) == 0);
    CHECK(expert_apply("scaled:factor=1.05", &t, 1, 3, 1) == 0);
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(&t); i++) {
            CHECK(mat(&t, m, 2)[i] == mat(&t, m, 0)[i] * 0.95f);
            CHECK(mat(&t, m, 3)[i] == mat(&t, m, 1)[i] * 1.05f);
        }
    layer_free(&t);
}

/* ---- SVD tests: experts built from a known SVD, so no decomposition is needed here ---- */

/* q (n x k, row-major) with orthonormal columns, by modified Gram-Schmidt of Gaussian columns */
static void random_orthonormal(double *q, int n, int k, Rng *rng) {
    for (size_t i = 0; i < (size_t)n * k; i++) q[i] = rng_normal(rng);
    for (int j = 0; j < k; j++) {
        for (int p = 0; p < j; p++) {
            double d = 0;
            for (int i = 0; i < n; i++) d += q[i * k + j] * q[i * k + p];
            for (int i = 0; i < n; i++) q[i * k + j] -= d * q[i * k + p];
        }
        double norm = 0;
        for (int i = 0; i < n; i++) norm += q[i * k + j] * q[i * k + j];
        for (int i = 0; i < n; i++) q[i * k + j] /= sqrt(norm);
    }
}

typedef struct {
    int rows, cols, k;
    double u[64 * 64], v[64 * 64], s[64]; /* u rows x k, v cols x k */
} KnownSvd;

/* w (rows x cols) = U diag(s) V^T with random U, V and s_i = 1 - 0.08 i (distinct, descending) */
static void known_matrix(KnownSvd *svd, int rows, int cols, float *w, Rng *rng) {
    int k = rows < cols ? rows : cols;
    svd->rows = rows, svd->cols = cols, svd->k = k;
    random_orthonormal(svd->u, rows, k, rng);
    random_orthonormal(svd->v, cols, k, rng);
    for (int j = 0; j < k; j++) svd->s[j] = 1.0 - 0.08 * j;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double sum = 0;
            for (int j = 0; j < k; j++) sum += svd->u[r * k + j] * svd->s[j] * svd->v[c * k + j];
            w[r * cols + c] = (float)sum;
        }
}

/* || w v_j - target * u_j || (w applied to right singular vector j of the known SVD) */
static double right_residual(const KnownSvd *svd, const float *w, int j, double target) {
    double err = 0;
    for (int r = 0; r < svd->rows; r++) {
        double sum = 0;
        for (int c = 0; c < svd->cols; c++) sum += w[r * svd->cols + c] * svd->v[c * svd->k + j];
        err += (sum - target * svd->u[r * svd->k + j]) * (sum - target * svd->u[r * svd->k + j]);
    }
    return sqrt(err);
}

/* || u_j^T w - target * v_j^T || */
static double left_residual(const KnownSvd *svd, const float *w, int j, double target) {
    double err = 0;
    for (int c = 0; c < svd->cols; c++) {
        double sum = 0;
        for (int r = 0; r < svd->rows; r++) sum += svd->u[r * svd->k + j] * w[r * svd->cols + c];
        err += (sum - target * svd->v[c * svd->k + j]) * (sum - target * svd->v[c * svd->k + j]);
    }
    return sqrt(err);
}

/* experts 0 and 1 built from known SVDs (C = 8, F = 12: k = 8 per matrix), replicas 2, 3 */
static TestLayer svd_layer(KnownSvd known[2][3], uint64_t seed) {
    TestLayer t = layer_make(2, 4, 8, 12, seed);
    Rng rng;
    rng_seed(&rng, seed + 1000);
    for (int e = 0; e < 2; e++)
        for (int m = 0; m < 3; m++)
            known_matrix(&known[e][m], m == 2 ? t.C : t.F, m == 2 ? t.F : t.C, mat(&t, m, e), &rng);
    copy_expert(&t, 0, 2), copy_expert(&t, 1, 3);
    return t;
}

TEST(grow_init_expert_svd_perturb_singular_values) {
    static KnownSvd known[2][3];
    TestLayer t = svd_layer(known, 12);
    const uint64_t seed = 44;
    CHECK(expert_apply("svd-perturb:sigma=0.1,drop=0.25", &t, 0, 2, seed) == 0);
    /* replay the documented stream: k normals per matrix, gate, up, down */
    Rng rng;
    rng_seed(&rng, seed);
    for (int m = 0; m < 3; m++) {
        const KnownSvd *svd = &known[0][m];
        int n_drop = (int)lround(0.25 * svd->k); /* 2 of 8 */
        for (int j = 0; j < svd->k; j++) {
            double z = rng_normal(&rng);
            double target = j < svd->k - n_drop ? svd->s[j] * (1 + 0.1 * z) : 0;
            CHECK_MSG(right_residual(svd, mat(&t, m, 2), j, target) < 1e-5, "matrix %d component %d", m, j);
            CHECK_MSG(left_residual(svd, mat(&t, m, 2), j, target) < 1e-5, "matrix %d component %d", m, j);
        }
    }
    /* sigma = 0: the exact rank-reduced truncation (6 of 8 components kept) */
    CHECK(expert_apply("svd-perturb:sigma=0,drop=0.25", &t, 1, 3, seed) == 0);
    for (int m = 0; m < 3; m++)
        for (int j = 0; j < known[1][m].k; j++)
            CHECK(right_residual(&known[1][m], mat(&t, m, 3), j, j < 6 ? known[1][m].s[j] : 0) < 1e-5);
    layer_free(&t);
}

TEST(grow_init_expert_svd_mix_keeps_top_components) {
    static KnownSvd known[2][3];
    TestLayer t = svd_layer(known, 13);
    CHECK(expert_apply("svd-mix:ratio=0.5", &t, 1, 3, 1) == 0); /* neighbour of 1 is 0; keep 4 of 8 */
    for (int m = 0; m < 3; m++) {
        const KnownSvd *svd = &known[1][m];
        for (int j = 0; j < 4; j++) {
            CHECK_MSG(right_residual(svd, mat(&t, m, 3), j, svd->s[j]) < 1e-5, "matrix %d component %d", m, j);
            CHECK_MSG(left_residual(svd, mat(&t, m, 3), j, svd->s[j]) < 1e-5, "matrix %d component %d", m, j);
        }
        /* the bottom changed: the source's own bottom components are gone */
        double moved = 0;
        for (int j = 4; j < svd->k; j++) moved += right_residual(svd, mat(&t, m, 3), j, svd->s[j]);
        CHECK(moved > 0.1);
    }
    /* ratio = 1 takes the neighbour whole; ratio = 0 keeps the source */
    CHECK(expert_apply("svd-mix:ratio=1", &t, 1, 3, 1) == 0);
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(&t); i++) CHECK_CLOSE(mat(&t, m, 3)[i], mat(&t, m, 0)[i], 1e-6);
    CHECK(expert_apply("svd-mix:ratio=0", &t, 0, 2, 1) == 0);
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(&t); i++) CHECK_CLOSE(mat(&t, m, 2)[i], mat(&t, m, 0)[i], 1e-6);
    layer_free(&t);
}

static double relative_error(const TestLayer *t, int a, int b) {
    double diff = 0, norm = 0;
    for (int m = 0; m < 3; m++)
        for (size_t i = 0; i < matrix_size(t); i++) {
            double d = (double)mat(t, m, a)[i] - mat(t, m, b)[i];
            diff += d * d, norm += (double)mat(t, m, b)[i] * mat(t, m, b)[i];
        }
    return sqrt(diff / norm);
}

TEST(grow_init_expert_sparse_code_close_not_identical) {
    TestLayer t = layer_make(4, 8, 16, 32, 14);
    TestLayer again = layer_clone(&t);
    CHECK(expert_apply("sparse-code", &t, 2, 6, 21) == 0);
    double err = relative_error(&t, 6, 2);
    CHECK_MSG(err < 0.5 && err > 1e-4, "relative error %g", err);
    CHECK(expert_apply("sparse-code", &again, 2, 6, 21) == 0);
    CHECK(expert_equal(&t, 6, &again, 6)); /* deterministic for a seed */
    /* a larger L1 weight gives a sparser, worse reconstruction */
    CHECK(expert_apply("sparse-code:lambda=0.5", &again, 2, 6, 21) == 0);
    CHECK(relative_error(&again, 6, 2) > err);
    layer_free(&t), layer_free(&again);
}

TEST(grow_init_expert_determinism) {
    const char *specs[] = {"noise", "drop", "shuffle", "orthogonal", "svd-perturb", "sparse-code:atoms=64"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        TestLayer a = layer_make(3, 6, 8, 16, 15);
        TestLayer b = layer_clone(&a), c = layer_clone(&a);
        CHECK(expert_apply(specs[i], &a, 1, 4, 123) == 0);
        CHECK(expert_apply(specs[i], &b, 1, 4, 123) == 0);
        CHECK(expert_apply(specs[i], &c, 1, 4, 124) == 0);
        CHECK_MSG(expert_equal(&a, 4, &b, 4), "%s: same seed, different result", specs[i]);
        CHECK_MSG(!expert_equal(&a, 4, &c, 4), "%s: different seeds, same result", specs[i]);
        layer_free(&a), layer_free(&b), layer_free(&c);
    }
}

/* ---- router methods ---- */

static const float *row(const TestLayer *t, int e) { return t->router + (size_t)e * t->C; }

TEST(grow_init_router_copy_and_bias_only_change_nothing) {
    const char *specs[] = {"copy", "bias-only"};
    for (int i = 0; i < 2; i++) {
        TestLayer t = layer_make(2, 4, 16, 4, 16);
        TestLayer before = layer_clone(&t);
        CHECK(router_apply(specs[i], &t, 1, 3, 2) == 0);
        CHECK(same_floats(t.router, before.router, (size_t)t.n * t.C));
        CHECK(same_floats(t.bias, before.bias, (size_t)t.n));
        layer_free(&t), layer_free(&before);
    }
}

TEST(grow_init_router_only_the_replica_row_is_written) {
    const char *specs[] = {"noise", "interpolate", "scaled", "perturb-new", "orthogonal", "adversarial",
                           "temperature", "svd-perturb"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        TestLayer t = layer_make(3, 6, 16, 4, 17);
        TestLayer before = layer_clone(&t);
        CHECK_MSG(router_apply(specs[i], &t, 2, 5, 3) == 0, "%s: %s", specs[i], up_last_error());
        CHECK_MSG(others_untouched(&before, &t, 5), "%s wrote outside the replica", specs[i]);
        CHECK_MSG(!same_floats(row(&t, 5), row(&before, 5), (size_t)t.C), "%s left the row unchanged", specs[i]);
        CHECK_MSG(i == 3 || t.bias[5] == before.bias[5], "%s changed the bias", specs[i]);
        CHECK(same_floats(t.gate, before.gate, (size_t)t.n * t.F * t.C));
        layer_free(&t), layer_free(&before);
    }
    TestLayer t = layer_make(2, 4, 16, 4, 17); /* a NULL bias is allowed */
    RouterInit init;
    Rng rng;
    rng_seed(&rng, 1);
    CHECK(router_init_parse("perturb-new", &init) == 0);
    CHECK(router_init_apply(&init, t.router, NULL, t.n, t.C, 0, 2, &rng) == 0);
    layer_free(&t);
}

TEST(grow_init_router_noise_is_relative) {
    TestLayer t = layer_make(2, 4, 2048, 1, 18);
    CHECK(router_apply("noise:sigma=0.1", &t, 1, 3, 4) == 0);
    float diff[2048];
    for (int c = 0; c < t.C; c++) diff[c] = row(&t, 3)[c] - row(&t, 1)[c];
    CHECK_CLOSE(std_d(diff, (size_t)t.C) / (0.1 * std_d(row(&t, 1), (size_t)t.C)), 1.0, 0.1);
    layer_free(&t);
}

TEST(grow_init_router_interpolate_exact) {
    TestLayer t = layer_make(3, 6, 16, 4, 19);
    CHECK(router_apply("interpolate:alpha=0.3", &t, 2, 5, 1) == 0);
    for (int c = 0; c < t.C; c++) CHECK_CLOSE(row(&t, 5)[c], 0.7f * row(&t, 2)[c] + 0.3f * row(&t, 1)[c], 1e-7);
    layer_free(&t);
}

TEST(grow_init_router_scaled_and_temperature_exact) {
    TestLayer t = layer_make(2, 4, 16, 4, 20);
    CHECK(router_apply("scaled", &t, 0, 2, 1) == 0);
    CHECK(router_apply("temperature:tau=4", &t, 1, 3, 1) == 0);
    for (int c = 0; c < t.C; c++) {
        CHECK(row(&t, 2)[c] == row(&t, 0)[c] * 0.95f);
        CHECK(row(&t, 3)[c] == row(&t, 1)[c] / 4.0f);
    }
    CHECK(router_apply("temperature", &t, 1, 3, 1) == 0);
    for (int c = 0; c < t.C; c++) CHECK(row(&t, 3)[c] == row(&t, 1)[c] / 2.0f);
    layer_free(&t);
}

TEST(grow_init_router_perturb_new_touches_row_and_bias_only) {
    TestLayer t = layer_make(2, 4, 16, 4, 21);
    TestLayer before = layer_clone(&t);
    CHECK(router_apply("perturb-new:sigma=0.05", &t, 0, 2, 7) == 0);
    CHECK(t.bias[2] != before.bias[2] && fabs(t.bias[2] - before.bias[2]) < 0.05 * 6);
    CHECK(!same_floats(row(&t, 2), row(&before, 2), (size_t)t.C));
    CHECK(others_untouched(&before, &t, 2));
    layer_free(&t), layer_free(&before);
}

TEST(grow_init_router_orthogonal) {
    TestLayer t = layer_make(2, 4, 32, 4, 22);
    CHECK(router_apply("orthogonal", &t, 1, 3, 5) == 0);
    double n1 = sqrt(dot_d(row(&t, 1), row(&t, 1), 32)), n3 = sqrt(dot_d(row(&t, 3), row(&t, 3), 32));
    CHECK_MSG(fabs(dot_d(row(&t, 1), row(&t, 3), 32) / (n1 * n3)) < 1e-5, "cosine not 0");
    CHECK_CLOSE(n3, n1, 1e-5);
    layer_free(&t);
}

TEST(grow_init_router_adversarial_opposite) {
    TestLayer t = layer_make(2, 4, 32, 4, 23);
    CHECK(router_apply("adversarial", &t, 0, 2, 1) == 0);
    CHECK(router_apply("adversarial:beta=0.5", &t, 1, 3, 1) == 0);
    double n0 = sqrt(dot_d(row(&t, 0), row(&t, 0), 32)), n2 = sqrt(dot_d(row(&t, 2), row(&t, 2), 32));
    CHECK_CLOSE(dot_d(row(&t, 0), row(&t, 2), 32) / (n0 * n2), -1.0, 1e-6);
    CHECK_CLOSE(n2, n0, 1e-6);
    for (int c = 0; c < t.C; c++) CHECK(row(&t, 3)[c] == -0.5f * row(&t, 1)[c]);
    layer_free(&t);
}

TEST(grow_init_router_svd_perturb) {
    TestLayer t = layer_make(4, 8, 16, 4, 24);
    TestLayer before = layer_clone(&t);
    /* sigma = 0 reconstructs the row (the SVD round trip is exact to float precision) */
    CHECK(router_apply("svd-perturb:sigma=0", &t, 1, 5, 2) == 0);
    for (int c = 0; c < t.C; c++) CHECK_CLOSE(row(&t, 5)[c], row(&before, 5)[c], 1e-5);
    CHECK(router_apply("svd-perturb:sigma=0.2", &t, 1, 5, 2) == 0);
    CHECK(others_untouched(&before, &t, 5));
    double change = 0, norm = 0;
    for (int c = 0; c < t.C; c++) {
        change += pow(row(&t, 5)[c] - row(&before, 5)[c], 2);
        norm += pow(row(&before, 5)[c], 2);
    }
    /* s_i (1 + 0.2 z): the row moves, by roughly sigma of its size */
    CHECK_MSG(sqrt(change / norm) > 0.01 && sqrt(change / norm) < 1.0, "relative change %g", sqrt(change / norm));
    layer_free(&t), layer_free(&before);
}

TEST(grow_init_router_determinism) {
    const char *specs[] = {"noise", "perturb-new", "orthogonal", "svd-perturb"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        TestLayer a = layer_make(2, 4, 16, 4, 25);
        TestLayer b = layer_clone(&a), c = layer_clone(&a);
        CHECK(router_apply(specs[i], &a, 1, 3, 5) == 0 && router_apply(specs[i], &b, 1, 3, 5) == 0);
        CHECK(router_apply(specs[i], &c, 1, 3, 6) == 0);
        CHECK_MSG(same_floats(a.router, b.router, 64) && a.bias[3] == b.bias[3], "%s: not deterministic", specs[i]);
        CHECK_MSG(!same_floats(a.router, c.router, 64), "%s: seed ignored", specs[i]);
        layer_free(&a), layer_free(&b), layer_free(&c);
    }
}
