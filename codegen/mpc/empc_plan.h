/*
 * The embedded MPC as an MPC plan: the interface of mpc_plan.h (create, cold, solve, store, shift) over
 * the float32 ADMM solver of empc_solver.h, so that SCPO's rollouts (mpc_rollout.c) and the exported
 * host controller (mpc_controller.c) run exactly the solver the Cortex-M4F runs.
 *
 * The solver is a function of the state alone (cold start inside every solve): plan_cold, plan_store and
 * plan_shift have nothing to do. plan_solve rounds the state to float32 (as the target receives it), solves
 * in float32 and widens the input. plan_solve_sensitivity is the same iteration in double (same float32
 * constants) for the rollouts' finite-difference Jacobian, which float32 rounding would swamp.
 *
 * Build-time macros: EMPC_DATA ("empc_data.h"). Compile with -ffp-contract=off -fno-math-errno.
 */
#ifndef SCPO_EMPC_PLAN_H
#define SCPO_EMPC_PLAN_H

#include <stdlib.h>
#include <string.h>

#define EMPC_REAL float
#define EMPC_SOLVE empc_solve_f32
#define EMPC_SQRT __builtin_sqrtf
#include "empc_solver.h"
#undef EMPC_REAL
#undef EMPC_SOLVE
#undef EMPC_SQRT
#define EMPC_REAL double
#define EMPC_SOLVE empc_solve_f64
#define EMPC_SQRT __builtin_sqrt
#include "empc_solver.h"
#undef EMPC_REAL
#undef EMPC_SOLVE
#undef EMPC_SQRT

typedef struct {
    int nx, nu, N;
} plan_t;

static void plan_free(plan_t *p) { memset(p, 0, sizeof(*p)); }

/* Returns 0 when the plant's sizes are the solver's. */
static int plan_create(plan_t *p, int nx, int nu) {
    p->nx = EMPC_NX;
    p->nu = EMPC_NU;
    p->N = EMPC_N;
    return (nx == EMPC_NX && nu == EMPC_NU) ? 0 : -1;
}

static int plan_check(const plan_t *p, int nx, int nu) { return p->nx == nx && p->nu == nu; }

static void plan_cold(plan_t *p, const double *x, const double *u_init) { (void)p; (void)x; (void)u_init; }

/* The certified input: float32 solve at float32(x). Status 0; iterations: the fixed count. */
static int plan_solve(plan_t *p, const double *x, double *u0, int *iterations) {
    float xf[EMPC_NX], uf[EMPC_NU];
    int i;
    (void)p;
    for (i = 0; i < EMPC_NX; ++i) xf[i] = (float)x[i];
    empc_solve_f32(xf, uf);
    for (i = 0; i < EMPC_NU; ++i) u0[i] = (double)uf[i];
    if (iterations) *iterations = EMPC_ITERATIONS;
    return 0;
}

/* The same iteration in double at x, for finite differences. */
static void plan_solve_sensitivity(plan_t *p, const double *x, double *u0) {
    (void)p;
    empc_solve_f64(x, u0);
}

/* The reference of those differences at x: the double solve there (not the float32 input u0). */
static void plan_sensitivity_base(plan_t *p, const double *x, const double *u0, double *base) {
    (void)u0;
    plan_solve_sensitivity(p, x, base);
}

static void plan_store(plan_t *p) { (void)p; }

static void plan_shift(plan_t *p) { (void)p; }

#endif /* SCPO_EMPC_PLAN_H */
