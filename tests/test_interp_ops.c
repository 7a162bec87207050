// Reference interpreter: leaves, elementwise ops, cast, where, reductions,
// matmul/bmm, gather/scatter_add and layout ops against values computed by
// hand (written literally below).
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>

#include "tests/support/interp_util.h"

TestSuite(interp_ops, .fini = nct_cleanup);

#define A1(op, attrs, x) NCT_APPLY(op, attrs, x)
#define A2(op, attrs, x, y) NCT_APPLY(op, attrs, x, y)

// ---- leaves ---------------------------------------------------------------------------
Test(interp_ops, input_param_identity) {
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "2,2");
  nc_id w = nct_param(g, "w", NC_I64, "3");
  nc_tensor xv = NCT_T(NC_F32, "2,2", 1, -2, 3.5, 4);
  nc_tensor wv = NCT_T(NC_I64, "3", 9007199254740993.0, -1, 7);
  ((int64_t *)wv.data)[0] = INT64_C(1) << 62 | 1;  // exact beyond 2^53
  nc_tensor a = nct_eval(g, x, "x", &xv, "w", &wv, NULL);
  nc_tensor b = nct_eval(g, w, "w", &wv, NULL);
  NCT_EXPECT(&a, 0, 1, -2, 3.5, 4);
  cr_expect(a.data != xv.data, "results are copies, not aliases of the feed");
  cr_expect_eq(((int64_t *)b.data)[0], INT64_C(1) << 62 | 1);
  cr_expect_eq(((int64_t *)b.data)[1], -1);
}

Test(interp_ops, const_splat_rounds_to_dtype) {
  nc_graph *g = nct_graph();
  nc_id c1 = nct_const(g, 2.5, NC_F32, "2,3");
  nc_id c2 = nct_const(g, -3.7, NC_I32, "2");
  nc_id c3 = nct_const(g, 1.0 / 3.0, NC_BF16, "1");
  nc_id c4 = nct_const(g, 1.0 / 3.0, NC_F16, "1");
  nc_id c5 = nct_const(g, 300, NC_U8, "1");
  nc_id c6 = nct_const(g, 0.5, NC_BOOL, "2");
  nc_tensor a = nct_eval(g, c1, NULL), b = nct_eval(g, c2, NULL), c = nct_eval(g, c3, NULL);
  nc_tensor d = nct_eval(g, c4, NULL), e = nct_eval(g, c5, NULL), f = nct_eval(g, c6, NULL);
  NCT_SHAPE(&a, NC_F32, "2,3");
  NCT_EXPECT(&a, 0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5);
  NCT_EXPECT(&b, 0, -3, -3);
  NCT_EXPECT(&c, 0, 0.333984375);     // bf16(1/3): 0x3EAB
  NCT_EXPECT(&d, 0, 0.333251953125);  // f16(1/3): 0x3555
  NCT_EXPECT(&e, 0, 255);             // saturates
  NCT_EXPECT(&f, 0, 1, 1);
}

Test(interp_ops, iota_axes_and_dtypes) {
  nc_graph *g = nct_graph();
  nc_id i0 = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_I32, "2,3"), "axis=0", 0);
  nc_id i1 = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_F32, "2,3"), "axis=1", 0);
  nc_id i2 = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_I64, "2,2,2"), "axis=1", 0);
  nc_id i3 = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_U8, "258"), "axis=0", 0);
  nc_tensor a = nct_eval(g, i0, NULL), b = nct_eval(g, i1, NULL), c = nct_eval(g, i2, NULL);
  nc_tensor d = nct_eval(g, i3, NULL);
  NCT_EXPECT(&a, 0, 0, 0, 0, 1, 1, 1);
  NCT_EXPECT(&b, 0, 0, 1, 2, 0, 1, 2);
  NCT_EXPECT(&c, 0, 0, 0, 1, 1, 0, 0, 1, 1);
  cr_expect_eq(((uint8_t *)d.data)[255], 255);
  cr_expect_eq(((uint8_t *)d.data)[257], 1);  // wraps
}

Test(interp_ops, iota_symbolic) {
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "T");
  nc_id io = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_F32, "T"), "axis=0", 0);
  nc_id s = nct_op(g, NC_OP_ADD, NULL, 2, x, io);
  nc_tensor xv = NCT_T(NC_F32, "4", 10, 10, 10, 10);
  nc_tensor r = nct_eval(g, s, "x", &xv, NULL);
  NCT_EXPECT(&r, 0, 10, 11, 12, 13);
}

// ---- unary -----------------------------------------------------------------------------
Test(interp_ops, neg_abs_relu_square_float) {
  nc_tensor x = NCT_T(NC_F32, "5", -2, -0.5, 0, 1.5, 3);
  nc_tensor a = A1(NC_OP_NEG, NULL, &x), b = A1(NC_OP_ABS, NULL, &x);
  nc_tensor c = A1(NC_OP_RELU, NULL, &x), d = A1(NC_OP_SQUARE, NULL, &x);
  NCT_EXPECT(&a, 0, 2, 0.5, 0, -1.5, -3);
  NCT_EXPECT(&b, 0, 2, 0.5, 0, 1.5, 3);
  NCT_EXPECT(&c, 0, 0, 0, 0, 1.5, 3);
  NCT_EXPECT(&d, 0, 4, 0.25, 0, 2.25, 9);
  nc_tensor n = NCT_T(NC_F32, "1", NAN);
  nc_tensor rn = A1(NC_OP_RELU, NULL, &n);
  NCT_EXPECT(&rn, 0, NAN);
}

Test(interp_ops, neg_abs_relu_square_ints_wrap) {
  nc_tensor x = NCT_T(NC_I32, "5", -7, 0, 5, -2147483648.0, 65536);
  nc_tensor a = A1(NC_OP_NEG, NULL, &x), b = A1(NC_OP_ABS, NULL, &x);
  nc_tensor c = A1(NC_OP_RELU, NULL, &x), d = A1(NC_OP_SQUARE, NULL, &x);
  NCT_EXPECT(&a, 0, 7, 0, -5, -2147483648.0, -65536);  // -INT32_MIN wraps
  NCT_EXPECT(&b, 0, 7, 0, 5, -2147483648.0, 65536);
  NCT_EXPECT(&c, 0, 0, 0, 5, 0, 65536);
  NCT_EXPECT(&d, 0, 49, 0, 25, 0, 0);  // 2^62 and 2^32 wrap to 0 in i32
  nc_tensor u = NCT_T(NC_U8, "3", 3, 16, 200);
  nc_tensor un = A1(NC_OP_NEG, NULL, &u), us = A1(NC_OP_SQUARE, NULL, &u);
  NCT_EXPECT(&un, 0, 253, 240, 56);
  NCT_EXPECT(&us, 0, 9, 0, 64);  // 256 -> 0, 40000 % 256 = 64
  nc_tensor l = NCT_T(NC_I64, "2", -3, 4);
  nc_tensor ls = A1(NC_OP_SQUARE, NULL, &l), la = A1(NC_OP_ABS, NULL, &l);
  NCT_EXPECT(&ls, 0, 9, 16);
  NCT_EXPECT(&la, 0, 3, 4);
}

Test(interp_ops, transcendental_f32) {
  nc_tensor x = NCT_T(NC_F32, "3", 0, 1, -1);
  nc_tensor a = A1(NC_OP_TANH, NULL, &x), b = A1(NC_OP_EXP, NULL, &x), c = A1(NC_OP_SIGMOID, NULL, &x);
  NCT_EXPECT(&a, 1e-7, 0, 0.7615941559557649, -0.7615941559557649);
  NCT_EXPECT(&b, 1e-6, 1, 2.718281828459045, 0.36787944117144233);
  NCT_EXPECT(&c, 1e-7, 0.5, 0.7310585786300049, 0.2689414213699951);
  nc_tensor p = NCT_T(NC_F32, "4", 1, 2, 4, 0.25);
  nc_tensor l = A1(NC_OP_LOG, NULL, &p), s = A1(NC_OP_SQRT, NULL, &p), r = A1(NC_OP_RSQRT, NULL, &p);
  NCT_EXPECT(&l, 1e-7, 0, 0.6931471805599453, 1.3862943611198906, -1.3862943611198906);
  NCT_EXPECT(&s, 1e-7, 1, 1.4142135623730951, 2, 0.5);
  NCT_EXPECT(&r, 1e-7, 1, 0.7071067811865476, 0.5, 2);
  nc_tensor ln3 = NCT_T(NC_F32, "1", 1.0986122886681098);
  nc_tensor sg = A1(NC_OP_SIGMOID, NULL, &ln3);
  NCT_EXPECT(&sg, 1e-7, 0.75);
  nc_tensor z = NCT_T(NC_F32, "2", 0, -1);
  nc_tensor lz = A1(NC_OP_LOG, NULL, &z), rz = A1(NC_OP_RSQRT, NULL, &z);
  NCT_EXPECT(&lz, 0, -INFINITY, NAN);
  NCT_EXPECT(&rz, 0, INFINITY, NAN);
  // sin/cos at 0, pi/6, pi/2 (f32 inputs)
  nc_tensor ang = NCT_T(NC_F32, "3", 0, 0.5235987755982988, 1.5707963267948966);
  nc_tensor sn = A1(NC_OP_SIN, NULL, &ang), cs = A1(NC_OP_COS, NULL, &ang);
  NCT_EXPECT(&sn, 1e-7, 0, 0.5, 1);
  NCT_EXPECT(&cs, 1e-7, 1, 0.8660254037844387, 0);
}

Test(interp_ops, powc) {
  nc_tensor x = NCT_T(NC_F32, "3", 2, -2, 4);
  nc_tensor a = A1(NC_OP_POWC, "p=3", &x), b = A1(NC_OP_POWC, "p=0.5", &x), c = A1(NC_OP_POWC, "p=-1", &x);
  NCT_EXPECT(&a, 0, 8, -8, 64);
  NCT_EXPECT(&b, 1e-7, 1.4142135623730951, NAN, 2);
  NCT_EXPECT(&c, 0, 0.5, -0.5, 0.25);
}

Test(interp_ops, unary_bf16_f16) {
  nc_tensor x = NCT_T(NC_BF16, "2", 1, 2);
  nc_tensor e = A1(NC_OP_EXP, NULL, &x);
  NCT_SHAPE(&e, NC_BF16, "2");
  NCT_EXPECT(&e, 0, 2.71875, 7.375);  // e = 2.71828 -> 2.71875; e^2 = 7.389 -> 7.375
  nc_tensor h = NCT_T(NC_F16, "2", 1, 2);
  nc_tensor eh = A1(NC_OP_EXP, NULL, &h);
  NCT_EXPECT(&eh, 0, 2.71875, 7.390625);  // f16 spacing 2^-9 at 2, 2^-8 at 4
}

Test(interp_ops, not_bool) {
  nc_tensor x = NCT_T(NC_BOOL, "3", 1, 0, 1);
  nc_tensor r = A1(NC_OP_NOT, NULL, &x);
  NCT_SHAPE(&r, NC_BOOL, "3");
  NCT_EXPECT(&r, 0, 0, 1, 0);
}

// ---- cast ---------------------------------------------------------------------------------
Test(interp_ops, cast_float_to_int_truncates_saturates) {
  nc_tensor x = NCT_T(NC_F32, "6", 1.7, -1.7, NAN, 3e9, -3e9, INFINITY);
  nc_tensor a = NCT_APPLYD(NC_OP_CAST, NC_I32, "6", NULL, &x);
  NCT_EXPECT(&a, 0, 1, -1, 0, 2147483647.0, -2147483648.0, 2147483647.0);
  nc_tensor u = NCT_APPLYD(NC_OP_CAST, NC_U8, "6", NULL, &x);
  NCT_EXPECT(&u, 0, 1, 0, 0, 255, 0, 255);
  nc_tensor l = NCT_APPLYD(NC_OP_CAST, NC_I64, "6", NULL, &x);
  NCT_EXPECT(&l, 0, 1, -1, 0, 3e9, -3e9, 9223372036854774784.0);
}

Test(interp_ops, cast_int_to_int_wraps) {
  nc_tensor x = NCT_T(NC_I64, "3", 4294967301.0, -1, 300);  // 2^32 + 5
  nc_tensor a = NCT_APPLYD(NC_OP_CAST, NC_I32, "3", NULL, &x);
  nc_tensor b = NCT_APPLYD(NC_OP_CAST, NC_U8, "3", NULL, &x);
  NCT_EXPECT(&a, 0, 5, -1, 300);
  NCT_EXPECT(&b, 0, 5, 255, 44);
  nc_tensor i = NCT_T(NC_I32, "2", -2, 7);
  nc_tensor c = NCT_APPLYD(NC_OP_CAST, NC_I64, "2", NULL, &i);
  NCT_EXPECT(&c, 0, -2, 7);
}

Test(interp_ops, cast_bool_and_floats) {
  nc_tensor x = NCT_T(NC_F32, "4", 0, -0.0, 0.5, NAN);
  nc_tensor b = NCT_APPLYD(NC_OP_CAST, NC_BOOL, "4", NULL, &x);
  NCT_EXPECT(&b, 0, 0, 0, 1, 1);
  nc_tensor bb = NCT_T(NC_BOOL, "2", 1, 0);
  nc_tensor f = NCT_APPLYD(NC_OP_CAST, NC_F32, "2", NULL, &bb);
  NCT_EXPECT(&f, 0, 1, 0);
  nc_tensor i = NCT_T(NC_I32, "3", 0, -5, 2);
  nc_tensor ib = NCT_APPLYD(NC_OP_CAST, NC_BOOL, "3", NULL, &i);
  NCT_EXPECT(&ib, 0, 0, 1, 1);
  // f32 -> bf16 / f16 round to nearest even
  nc_tensor y = NCT_T(NC_F32, "4", 1.0 / 3.0, 1.00390625, 1.01171875, 70000);
  nc_tensor h = NCT_APPLYD(NC_OP_CAST, NC_BF16, "4", NULL, &y);
  NCT_EXPECT(&h, 0, 0.333984375, 1.0, 1.015625, 70144);  // ties to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6
  nc_tensor hf = NCT_APPLYD(NC_OP_CAST, NC_F16, "4", NULL, &y);
  NCT_EXPECT(&hf, 0, 0.333251953125, 1.00390625, 1.01171875, INFINITY);
  nc_tensor back = NCT_APPLYD(NC_OP_CAST, NC_F32, "4", NULL, &h);
  NCT_EXPECT(&back, 0, 0.333984375, 1.0, 1.015625, 70144);
  nc_tensor bi = NCT_APPLYD(NC_OP_CAST, NC_I32, "4", NULL, &h);
  NCT_EXPECT(&bi, 0, 0, 1, 1, 70144);
}

// ---- binary ---------------------------------------------------------------------------------
Test(interp_ops, arith_f32) {
  nc_tensor a = NCT_T(NC_F32, "4", 1.5, -2, 7, 1), b = NCT_T(NC_F32, "4", 2.25, 0.5, 2, 0);
  nc_tensor s = A2(NC_OP_ADD, NULL, &a, &b), d = A2(NC_OP_SUB, NULL, &a, &b);
  nc_tensor m = A2(NC_OP_MUL, NULL, &a, &b), q = A2(NC_OP_DIV, NULL, &a, &b);
  NCT_EXPECT(&s, 0, 3.75, -1.5, 9, 1);
  NCT_EXPECT(&d, 0, -0.75, -2.5, 5, 1);
  NCT_EXPECT(&m, 0, 3.375, -1, 14, 0);
  NCT_EXPECT(&q, 1e-7, 1.5 / 2.25, -4, 3.5, INFINITY);
}

Test(interp_ops, arith_bf16_f16_round_once) {
  nc_tensor a = NCT_T(NC_BF16, "2", 1, 1), b = NCT_T(NC_BF16, "2", 0.00390625, 0.01171875);
  nc_tensor s = A2(NC_OP_ADD, NULL, &a, &b);
  NCT_SHAPE(&s, NC_BF16, "2");
  NCT_EXPECT(&s, 0, 1.0, 1.015625);  // 1+2^-8 ties to even (1); 1+3*2^-8 -> 1+2^-6
  nc_tensor h = NCT_T(NC_F16, "2", 2048, 0.1), k = NCT_T(NC_F16, "2", 1, 0.2);
  nc_tensor hs = A2(NC_OP_ADD, NULL, &h, &k);
  NCT_EXPECT(&hs, 0, 2048, 0.2998046875);  // 2049 ties to even; f16(0.1)+f16(0.2) = 4914/16384 ties to 4912/16384
}

Test(interp_ops, arith_ints_wrap_and_divide) {
  nc_tensor a = NCT_T(NC_I32, "5", 2147483647.0, 7, -7, -2147483648.0, 65536);
  nc_tensor b = NCT_T(NC_I32, "5", 1, 2, 2, -1, 65536);
  nc_tensor s = A2(NC_OP_ADD, NULL, &a, &b), d = A2(NC_OP_DIV, NULL, &a, &b), m = A2(NC_OP_MUL, NULL, &a, &b);
  nc_tensor sb = A2(NC_OP_SUB, NULL, &b, &a);
  NCT_EXPECT(&s, 0, -2147483648.0, 9, -5, 2147483647.0, 131072);
  NCT_EXPECT(&d, 0, 2147483647.0, 3, -3, -2147483648.0, 1);  // truncation; INT_MIN/-1 wraps
  NCT_EXPECT(&m, 0, 2147483647.0, 14, -14, -2147483648.0, 0);
  NCT_EXPECT(&sb, 0, -2147483646.0, -5, 9, 2147483647.0, 0);
  nc_tensor u = NCT_T(NC_U8, "2", 250, 3), v = NCT_T(NC_U8, "2", 10, 5);
  nc_tensor us = A2(NC_OP_ADD, NULL, &u, &v), ud = A2(NC_OP_SUB, NULL, &u, &v);
  NCT_EXPECT(&us, 0, 4, 8);
  NCT_EXPECT(&ud, 0, 240, 254);
  nc_tensor l = NCT_T(NC_I64, "2", -9, 9), r = NCT_T(NC_I64, "2", 4, -4);
  nc_tensor ld = A2(NC_OP_DIV, NULL, &l, &r);
  NCT_EXPECT(&ld, 0, -2, -2);
}

Test(interp_ops, max_min_nan_propagates) {
  nc_tensor a = NCT_T(NC_F32, "4", 1, NAN, -3, 2), b = NCT_T(NC_F32, "4", 2, 5, NAN, -2);
  nc_tensor mx = A2(NC_OP_MAX, NULL, &a, &b), mn = A2(NC_OP_MIN, NULL, &a, &b);
  NCT_EXPECT(&mx, 0, 2, NAN, NAN, 2);
  NCT_EXPECT(&mn, 0, 1, NAN, NAN, -2);
  nc_tensor i = NCT_T(NC_I64, "2", -5, 9), j = NCT_T(NC_I64, "2", 3, 4);
  nc_tensor imx = A2(NC_OP_MAX, NULL, &i, &j), imn = A2(NC_OP_MIN, NULL, &i, &j);
  NCT_EXPECT(&imx, 0, 3, 9);
  NCT_EXPECT(&imn, 0, -5, 4);
}

Test(interp_ops, and_or) {
  nc_tensor a = NCT_T(NC_BOOL, "4", 0, 0, 1, 1), b = NCT_T(NC_BOOL, "4", 0, 1, 0, 1);
  nc_tensor x = A2(NC_OP_AND, NULL, &a, &b), y = A2(NC_OP_OR, NULL, &a, &b);
  NCT_EXPECT(&x, 0, 0, 0, 0, 1);
  NCT_EXPECT(&y, 0, 0, 1, 1, 1);
}

Test(interp_ops, compares_float_with_nan) {
  nc_tensor a = NCT_T(NC_F32, "4", 1, 2, 3, NAN), b = NCT_T(NC_F32, "4", 2, 2, 1, NAN);
  nc_tensor eq = A2(NC_OP_EQ, NULL, &a, &b), ne = A2(NC_OP_NE, NULL, &a, &b), lt = A2(NC_OP_LT, NULL, &a, &b);
  nc_tensor le = A2(NC_OP_LE, NULL, &a, &b), gt = A2(NC_OP_GT, NULL, &a, &b), ge = A2(NC_OP_GE, NULL, &a, &b);
  NCT_SHAPE(&eq, NC_BOOL, "4");
  NCT_EXPECT(&eq, 0, 0, 1, 0, 0);
  NCT_EXPECT(&ne, 0, 1, 0, 1, 1);
  NCT_EXPECT(&lt, 0, 1, 0, 0, 0);
  NCT_EXPECT(&le, 0, 1, 1, 0, 0);
  NCT_EXPECT(&gt, 0, 0, 0, 1, 0);
  NCT_EXPECT(&ge, 0, 0, 1, 1, 0);
}

Test(interp_ops, compares_ints_exact) {
  nc_tensor a = NCT_T(NC_I64, "3", 0, -1, 5), b = NCT_T(NC_I64, "3", 0, 0, 5);
  ((int64_t *)a.data)[0] = (INT64_C(1) << 60) + 1;  // differs from b beyond double precision
  ((int64_t *)b.data)[0] = INT64_C(1) << 60;
  nc_tensor eq = A2(NC_OP_EQ, NULL, &a, &b), gt = A2(NC_OP_GT, NULL, &a, &b);
  NCT_EXPECT(&eq, 0, 0, 0, 1);
  NCT_EXPECT(&gt, 0, 1, 0, 0);
  nc_tensor u = NCT_T(NC_BOOL, "2", 1, 0), v = NCT_T(NC_BOOL, "2", 1, 1);
  nc_tensor ue = A2(NC_OP_EQ, NULL, &u, &v), ul = A2(NC_OP_LT, NULL, &u, &v);
  NCT_EXPECT(&ue, 0, 1, 0);
  NCT_EXPECT(&ul, 0, 0, 1);
}

Test(interp_ops, where_selects_exactly) {
  nc_tensor c = NCT_T(NC_BOOL, "3", 1, 0, 1);
  nc_tensor a = NCT_T(NC_F32, "3", 1, 2, 3), b = NCT_T(NC_F32, "3", 10, 20, 30);
  nc_tensor r = NCT_APPLY(NC_OP_WHERE, NULL, &c, &a, &b);
  NCT_EXPECT(&r, 0, 1, 20, 3);
  nc_tensor ia = NCT_T(NC_I64, "3", 0, 0, 0), ib = NCT_T(NC_I64, "3", -1, -2, -3);
  ((int64_t *)ia.data)[2] = (INT64_C(1) << 60) + 1;
  nc_tensor ri = NCT_APPLY(NC_OP_WHERE, NULL, &c, &ia, &ib);
  cr_expect_eq(((int64_t *)ri.data)[2], (INT64_C(1) << 60) + 1);
  cr_expect_eq(((int64_t *)ri.data)[1], -2);
}

// ---- reductions --------------------------------------------------------------------------------
Test(interp_ops, reduce_sum_axes_keepdim) {
  nc_tensor x = NCT_T(NC_F32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor a = A1(NC_OP_REDUCE_SUM, "axes=0", &x), b = A1(NC_OP_REDUCE_SUM, "axes=1", &x);
  nc_tensor c = A1(NC_OP_REDUCE_SUM, "axes=1 keepdim=1", &x), d = A1(NC_OP_REDUCE_SUM, "axes=0,1", &x);
  nc_tensor e = A1(NC_OP_REDUCE_SUM, "axes=0,1 keepdim=1", &x);
  NCT_SHAPE(&a, NC_F32, "3");
  NCT_EXPECT(&a, 0, 5, 7, 9);
  NCT_EXPECT(&b, 0, 6, 15);
  NCT_SHAPE(&c, NC_F32, "2,1");
  NCT_EXPECT(&c, 0, 6, 15);
  NCT_SHAPE(&d, NC_F32, "");
  NCT_EXPECT(&d, 0, 21);
  NCT_SHAPE(&e, NC_F32, "1,1");
  nc_tensor y = NCT_T(NC_F32, "2,2,2", 1, 2, 3, 4, 5, 6, 7, 8);
  nc_tensor f = A1(NC_OP_REDUCE_SUM, "axes=0,2 keepdim=1", &y), h = A1(NC_OP_REDUCE_SUM, "axes=1", &y);
  NCT_SHAPE(&f, NC_F32, "1,2,1");
  NCT_EXPECT(&f, 0, 14, 22);
  NCT_EXPECT(&h, 0, 4, 6, 12, 14);
}

Test(interp_ops, reduce_max_mean) {
  nc_tensor x = NCT_T(NC_F32, "2,3", 1, -2, 3, -4, -5, -6);
  nc_tensor a = A1(NC_OP_REDUCE_MAX, "axes=1", &x), b = A1(NC_OP_REDUCE_MAX, "axes=0", &x);
  nc_tensor c = A1(NC_OP_REDUCE_MEAN, "axes=0", &x), d = A1(NC_OP_REDUCE_MEAN, "axes=0,1", &x);
  nc_tensor e = A1(NC_OP_REDUCE_MEAN, "axes=1 keepdim=1", &x);
  NCT_EXPECT(&a, 0, 3, -4);
  NCT_EXPECT(&b, 0, 1, -2, 3);
  NCT_EXPECT(&c, 0, -1.5, -3.5, -1.5);
  NCT_EXPECT(&d, 1e-6, -13.0 / 6.0);
  NCT_SHAPE(&e, NC_F32, "2,1");
  NCT_EXPECT(&e, 1e-6, 2.0 / 3.0, -5);
  nc_tensor n = NCT_T(NC_F32, "3", 1, NAN, 2);
  nc_tensor nm = A1(NC_OP_REDUCE_MAX, "axes=0", &n);
  NCT_EXPECT(&nm, 0, NAN);
}

Test(interp_ops, reduce_ints_and_halves) {
  nc_tensor x = NCT_T(NC_I32, "2,2", 2147483647.0, 1, -5, -7);
  nc_tensor s = A1(NC_OP_REDUCE_SUM, "axes=1", &x), m = A1(NC_OP_REDUCE_MAX, "axes=0", &x);
  NCT_EXPECT(&s, 0, -2147483648.0, -12);  // wraps
  NCT_EXPECT(&m, 0, 2147483647.0, 1);
  nc_tensor u = NCT_T(NC_U8, "3", 200, 100, 1);
  nc_tensor us = A1(NC_OP_REDUCE_SUM, "axes=0", &u);
  NCT_EXPECT(&us, 0, 45);  // 301 % 256
  // bf16: the sum is exact in double, rounded once: 1 + 3 * 2^-9 -> 1 + 2^-7
  nc_tensor b = NCT_T(NC_BF16, "4", 1, 0.001953125, 0.001953125, 0.001953125);
  nc_tensor bs = A1(NC_OP_REDUCE_SUM, "axes=0", &b), bm = A1(NC_OP_REDUCE_MEAN, "axes=0", &b);
  NCT_EXPECT(&bs, 0, 1.0078125);
  NCT_EXPECT(&bm, 0, 0.251953125);  // 1.005859375 / 4 = 0.25146484375 -> bf16 0.251953125
  nc_tensor h = NCT_T(NC_F16, "2", 0.5, 0.25);
  nc_tensor hm = A1(NC_OP_REDUCE_MEAN, "axes=0", &h);
  NCT_EXPECT(&hm, 0, 0.375);
}

// ---- contractions --------------------------------------------------------------------------------
Test(interp_ops, matmul_plain_ta_tb) {
  nc_tensor a = NCT_T(NC_F32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor b = NCT_T(NC_F32, "3,2", 7, 8, 9, 10, 11, 12);
  nc_tensor at = NCT_T(NC_F32, "3,2", 1, 4, 2, 5, 3, 6);
  nc_tensor bt = NCT_T(NC_F32, "2,3", 7, 9, 11, 8, 10, 12);
  nc_tensor r0 = A2(NC_OP_MATMUL, NULL, &a, &b), r1 = A2(NC_OP_MATMUL, "ta=1", &at, &b);
  nc_tensor r2 = A2(NC_OP_MATMUL, "tb=1", &a, &bt), r3 = A2(NC_OP_MATMUL, "ta=1 tb=1", &at, &bt);
  NCT_SHAPE(&r0, NC_F32, "2,2");
  NCT_EXPECT(&r0, 0, 58, 64, 139, 154);
  NCT_EXPECT(&r1, 0, 58, 64, 139, 154);
  NCT_EXPECT(&r2, 0, 58, 64, 139, 154);
  NCT_EXPECT(&r3, 0, 58, 64, 139, 154);
}

Test(interp_ops, matmul_batched_lhs) {
  nc_tensor a = NCT_T(NC_F32, "2,1,3", 1, 2, 3, 4, 5, 6);
  nc_tensor bt = NCT_T(NC_F32, "2,3", 7, 9, 11, 8, 10, 12);
  nc_tensor r = A2(NC_OP_MATMUL, "tb=1", &a, &bt);
  NCT_SHAPE(&r, NC_F32, "2,1,2");
  NCT_EXPECT(&r, 0, 58, 64, 139, 154);
}

Test(interp_ops, matmul_bf16_f16_round_once) {
  // 1*1 + 1*2^-8 + 1*2^-9 = 1 + 3*2^-9: rounding each partial sum to bf16
  // would give 1.0; rounding once gives 1 + 2^-7.
  nc_tensor a = NCT_T(NC_BF16, "1,3", 1, 1, 1), b = NCT_T(NC_BF16, "3,1", 1, 0.00390625, 0.001953125);
  nc_tensor r = A2(NC_OP_MATMUL, NULL, &a, &b);
  NCT_SHAPE(&r, NC_BF16, "1,1");
  NCT_EXPECT(&r, 0, 1.0078125);
  nc_tensor h = NCT_T(NC_F16, "1,2", 1000, 1), k = NCT_T(NC_F16, "2,1", 2.5, 0.25);
  nc_tensor rh = A2(NC_OP_MATMUL, NULL, &h, &k);
  NCT_EXPECT(&rh, 0, 2500);  // 2500.25 -> f16 spacing 2 at 2048..4096
}

Test(interp_ops, bmm_all_transposes) {
  nc_tensor a = NCT_T(NC_F32, "2,2,2", 1, 2, 3, 4, 1, 0, 0, 1);
  nc_tensor b = NCT_T(NC_F32, "2,2,2", 5, 6, 7, 8, 2, 3, 4, 5);
  nc_tensor at = NCT_T(NC_F32, "2,2,2", 1, 3, 2, 4, 1, 0, 0, 1);
  nc_tensor bt = NCT_T(NC_F32, "2,2,2", 5, 7, 6, 8, 2, 4, 3, 5);
  nc_tensor r0 = A2(NC_OP_BMM, NULL, &a, &b), r1 = A2(NC_OP_BMM, "ta=1", &at, &b);
  nc_tensor r2 = A2(NC_OP_BMM, "tb=1", &a, &bt), r3 = A2(NC_OP_BMM, "ta=1 tb=1", &at, &bt);
  NCT_EXPECT(&r0, 0, 19, 22, 43, 50, 2, 3, 4, 5);
  NCT_EXPECT(&r1, 0, 19, 22, 43, 50, 2, 3, 4, 5);
  NCT_EXPECT(&r2, 0, 19, 22, 43, 50, 2, 3, 4, 5);
  NCT_EXPECT(&r3, 0, 19, 22, 43, 50, 2, 3, 4, 5);
}

Test(interp_ops, bmm_rank4_rectangular_f16) {
  // (1,2,1,2) @ (1,2,2,3)
  nc_tensor a = NCT_T(NC_F16, "1,2,1,2", 1, 2, -1, 0.5);
  nc_tensor b = NCT_T(NC_F16, "1,2,2,3", 1, 0, 2, 0, 1, 3, 4, 2, 0, 2, 4, 6);
  nc_tensor r = A2(NC_OP_BMM, NULL, &a, &b);
  NCT_SHAPE(&r, NC_F16, "1,2,1,3");
  NCT_EXPECT(&r, 0, 1, 2, 8, -3, 0, 3);
}

// ---- embeddings ---------------------------------------------------------------------------------
Test(interp_ops, gather_rows) {
  nc_tensor t = NCT_T(NC_F32, "3,2", 1, 2, 3, 4, 5, 6);
  nc_tensor ids = NCT_T(NC_I32, "2,2", 2, 0, 1, 1);
  nc_tensor r = A2(NC_OP_GATHER, NULL, &t, &ids);
  NCT_SHAPE(&r, NC_F32, "2,2,2");
  NCT_EXPECT(&r, 0, 5, 6, 1, 2, 3, 4, 3, 4);
  nc_tensor tb = NCT_T(NC_BF16, "2,3", 0.5, 1, 1.5, -1, -2, -3);
  nc_tensor one = NCT_T(NC_I64, "", 1);
  nc_tensor rb = A2(NC_OP_GATHER, NULL, &tb, &one);
  NCT_SHAPE(&rb, NC_BF16, "3");
  NCT_EXPECT(&rb, 0, -1, -2, -3);
}

Test(interp_ops, scatter_add_accumulates) {
  nc_tensor ids = NCT_T(NC_I32, "3", 2, 0, 2);
  nc_tensor src = NCT_T(NC_F32, "3,2", 1, 2, 3, 4, 5, 6);
  nc_tensor r = NCT_APPLYD(NC_OP_SCATTER_ADD, NC_F32, "3,2", NULL, &ids, &src);
  NCT_SHAPE(&r, NC_F32, "3,2");
  NCT_EXPECT(&r, 0, 3, 4, 0, 0, 6, 8);
  nc_tensor ids2 = NCT_T(NC_I64, "2,2", 1, 1, 1, 0);
  nc_tensor src2 = NCT_T(NC_I32, "2,2,1", 2147483647.0, 1, 5, 7);
  nc_tensor r2 = NCT_APPLYD(NC_OP_SCATTER_ADD, NC_I32, "2,1", NULL, &ids2, &src2);
  NCT_EXPECT(&r2, 0, 7, -2147483643.0);  // row 1: INT_MAX + 1 + 5 wraps
  // bf16: accumulate in double, round once: 1 + 2^-8 + 2^-8 = 1 + 2^-7 (exact in bf16)
  nc_tensor ids3 = NCT_T(NC_I32, "3", 0, 0, 0);
  nc_tensor src3 = NCT_T(NC_BF16, "3,1", 1, 0.00390625, 0.00390625);
  nc_tensor r3 = NCT_APPLYD(NC_OP_SCATTER_ADD, NC_BF16, "1,1", NULL, &ids3, &src3);
  NCT_EXPECT(&r3, 0, 1.0078125);
}

// ---- layout ------------------------------------------------------------------------------------------
Test(interp_ops, reshape_keeps_order) {
  nc_tensor x = NCT_T(NC_I32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor r = NCT_APPLYD(NC_OP_RESHAPE, NC_I32, "3,1,2", NULL, &x);
  NCT_SHAPE(&r, NC_I32, "3,1,2");
  NCT_EXPECT(&r, 0, 1, 2, 3, 4, 5, 6);
}

Test(interp_ops, permute_rank2_rank3) {
  nc_tensor x = NCT_T(NC_F32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor r = A1(NC_OP_PERMUTE, "perm=1,0", &x);
  NCT_SHAPE(&r, NC_F32, "3,2");
  NCT_EXPECT(&r, 0, 1, 4, 2, 5, 3, 6);
  nc_tensor y = NCT_T(NC_BF16, "1,2,3", 0, 1, 2, 3, 4, 5);
  nc_tensor s = A1(NC_OP_PERMUTE, "perm=2,0,1", &y);
  NCT_SHAPE(&s, NC_BF16, "3,1,2");
  NCT_EXPECT(&s, 0, 0, 3, 1, 4, 2, 5);
  nc_tensor z = NCT_T(NC_U8, "2,1,2", 1, 2, 3, 4);
  nc_tensor t = A1(NC_OP_PERMUTE, "perm=1,2,0", &z);  // out (1,2,2): out[0][k][i] = z[i][0][k]
  NCT_SHAPE(&t, NC_U8, "1,2,2");
  NCT_EXPECT(&t, 0, 1, 3, 2, 4);
}

Test(interp_ops, slice_axes) {
  nc_tensor x = NCT_T(NC_F32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor a = A1(NC_OP_SLICE, "axis=1 start=1 end=3", &x), b = A1(NC_OP_SLICE, "axis=0 start=1 end=2", &x);
  NCT_SHAPE(&a, NC_F32, "2,2");
  NCT_EXPECT(&a, 0, 2, 3, 5, 6);
  NCT_SHAPE(&b, NC_F32, "1,3");
  NCT_EXPECT(&b, 0, 4, 5, 6);
  nc_tensor y = NCT_T(NC_I64, "2,3,2", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
  nc_tensor c = A1(NC_OP_SLICE, "axis=1 start=2 end=3", &y);
  NCT_EXPECT(&c, 0, 4, 5, 10, 11);
}

Test(interp_ops, concat_axes) {
  nc_tensor a = NCT_T(NC_F32, "2,1", 1, 2), b = NCT_T(NC_F32, "2,2", 3, 4, 5, 6);
  nc_tensor r = A2(NC_OP_CONCAT, "axis=1", &a, &b);
  NCT_SHAPE(&r, NC_F32, "2,3");
  NCT_EXPECT(&r, 0, 1, 3, 4, 2, 5, 6);
  nc_tensor c = NCT_T(NC_I32, "1,2", 7, 8), d = NCT_T(NC_I32, "2,2", 1, 2, 3, 4);
  nc_tensor e = NCT_T(NC_I32, "1,2", 9, 10);
  nc_tensor s = NCT_APPLY(NC_OP_CONCAT, "axis=0", &c, &d, &e);
  NCT_SHAPE(&s, NC_I32, "4,2");
  NCT_EXPECT(&s, 0, 7, 8, 1, 2, 3, 4, 9, 10);
}

Test(interp_ops, expand_right_aligned) {
  nc_tensor x = NCT_T(NC_F32, "3", 1, 2, 3);
  nc_tensor a = NCT_APPLYD(NC_OP_EXPAND, NC_F32, "2,3", NULL, &x);
  NCT_EXPECT(&a, 0, 1, 2, 3, 1, 2, 3);
  nc_tensor y = NCT_T(NC_I64, "2,1", 5, 6);
  nc_tensor b = NCT_APPLYD(NC_OP_EXPAND, NC_I64, "2,3", NULL, &y);
  NCT_EXPECT(&b, 0, 5, 5, 5, 6, 6, 6);
  nc_tensor z = NCT_T(NC_BOOL, "1,2,1", 1, 0);
  nc_tensor c = NCT_APPLYD(NC_OP_EXPAND, NC_BOOL, "2,2,2,2", NULL, &z);
  NCT_EXPECT(&c, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0);
}

Test(interp_ops, shift_zero_fills) {
  nc_tensor x = NCT_T(NC_F32, "2,3", 1, 2, 3, 4, 5, 6);
  nc_tensor a = NCT_APPLY(NC_OP_SHIFT, "axis=1 amount=1", &x), b = NCT_APPLY(NC_OP_SHIFT, "axis=0 amount=-1", &x);
  NCT_EXPECT(&a, 0, 0, 1, 2, 0, 4, 5);
  NCT_EXPECT(&b, 0, 4, 5, 6, 0, 0, 0);
}

Test(interp_ops, symbolic_shapes_bind) {
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "B,T,2");
  nc_id r = nct_opd(g, NC_OP_RESHAPE, nct_type(g, NC_F32, "B*T,2"), NULL, 1, x);
  nc_id s = nct_op(g, NC_OP_REDUCE_SUM, "axes=1", 1, r);
  nc_tensor xv = NCT_T(NC_F32, "1,3,2", 1, 2, 3, 4, 5, 6);
  nc_tensor out = nct_eval(g, s, "x", &xv, NULL);
  NCT_SHAPE(&out, NC_F32, "3");
  NCT_EXPECT(&out, 0, 3, 7, 11);
}

Test(interp_ops, run_outputs_and_duplicate_ids) {
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "2");
  nc_id y = nct_op(g, NC_OP_NEG, NULL, 1, x);
  nc_id z = nct_op(g, NC_OP_MUL, NULL, 2, y, y);
  cr_assert_eq(nc_graph_set_output(g, "neg", y), NC_OK);
  cr_assert_eq(nc_graph_set_output(g, "sq", z), NC_OK);
  nc_tensor xv = NCT_T(NC_F32, "2", 2, -3);
  nc_feed f = {"x", &xv};
  nc_tensor outs[2];
  cr_assert_eq(nc_interp_run(g, &f, 1, outs), NC_OK);
  NCT_EXPECT(&outs[0], 0, -2, 3);
  NCT_EXPECT(&outs[1], 0, 4, 9);
  nc_tensor_free(&outs[0]);
  nc_tensor_free(&outs[1]);
  nc_id ids[3] = {z, x, z};
  nc_tensor v[3];
  cr_assert_eq(nc_interp_eval(g, &f, 1, ids, 3, v), NC_OK);
  NCT_EXPECT(&v[0], 0, 4, 9);
  NCT_EXPECT(&v[1], 0, 2, -3);
  NCT_EXPECT(&v[2], 0, 4, 9);
  cr_expect(v[0].data != v[2].data && v[1].data != xv.data);
  for (int i = 0; i < 3; i++) nc_tensor_free(&v[i]);
}
