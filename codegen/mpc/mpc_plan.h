/*
 * One acados solver instance and its warm-start plan: the MPC step every scpo-ctrl driver shares
 * (SCPO's rollouts in mpc_rollout.c, the exported controller in mpc_controller.c), so they perform
 * the same operations in the same order and give the same inputs.
 *
 * Per closed-loop step: solve from x with the stored plan as initial guess, store the solution,
 * shift it by one stage (the last stage repeated). A trajectory starts with a reset of the solver's
 * memory and the cold plan (every predicted state x, every input u_init).
 *
 * Build-time macros: MODEL (acados model name), SOLVER_HEADER ("acados_solver_<MODEL>.h").
 * Header-only (static functions): include it in one translation unit per driver.
 */
#ifndef SCPO_MPC_PLAN_H
#define SCPO_MPC_PLAN_H

#include <stdlib.h>
#include <string.h>

#include "acados_c/ocp_nlp_interface.h"
#include SOLVER_HEADER

#define PLAN_CAT_(a, b) a##b
#define PLAN_CAT(a, b) PLAN_CAT_(a, b)
#define SOLVER(fn) PLAN_CAT(MODEL, PLAN_CAT(_acados_, fn))
#define CAPSULE PLAN_CAT(MODEL, _solver_capsule)

typedef struct {
    CAPSULE *capsule;
    ocp_nlp_config *config;
    ocp_nlp_dims *dims;
    ocp_nlp_in *in;
    ocp_nlp_out *out;
    int nx, nu, N;
    double *xs, *us; /* stored plan (N+1) nx, N nu: the next solve's initial guess */
} plan_t;

static void plan_free(plan_t *p) {
    if (p->capsule) {
        SOLVER(free)(p->capsule);
        SOLVER(free_capsule)(p->capsule);
    }
    free(p->xs);
    free(p->us);
    memset(p, 0, sizeof(*p));
}

/* Create the solver (nx, nu: the plant's sizes). Returns 0 on success. */
static int plan_create(plan_t *p, int nx, int nu) {
    memset(p, 0, sizeof(*p));
    p->capsule = SOLVER(create_capsule)();
    if (!p->capsule) return -1;
    if (SOLVER(create)(p->capsule) != 0) {
        SOLVER(free_capsule)(p->capsule);
        p->capsule = NULL;
        return -1;
    }
    p->config = SOLVER(get_nlp_config)(p->capsule);
    p->dims = SOLVER(get_nlp_dims)(p->capsule);
    p->in = SOLVER(get_nlp_in)(p->capsule);
    p->out = SOLVER(get_nlp_out)(p->capsule);
    p->nx = nx;
    p->nu = nu;
    p->N = p->dims->N;
    p->xs = calloc((size_t)(p->N + 1) * (size_t)nx, sizeof(double));
    p->us = calloc((size_t)p->N * (size_t)nu, sizeof(double));
    if (!p->xs || !p->us) {
        plan_free(p);
        return -1;
    }
    return 0;
}

/* Start a trajectory at x: reset the solver's memory, cold plan. */
static void plan_cold(plan_t *p, const double *x, const double *u_init) {
    SOLVER(reset)(p->capsule, 1);
    for (int i = 0; i <= p->N; i++) memcpy(p->xs + (size_t)i * p->nx, x, sizeof(double) * (size_t)p->nx);
    for (int i = 0; i < p->N; i++) memcpy(p->us + (size_t)i * p->nu, u_init, sizeof(double) * (size_t)p->nu);
}

/* Solve from x with the stored plan as initial guess; u0 gets the first input. Returns acados' status. */
static int plan_solve(plan_t *p, const double *x, double *u0, int *iterations) {
    ocp_nlp_constraints_model_set(p->config, p->dims, p->in, 0, "lbx", (void *)x);
    ocp_nlp_constraints_model_set(p->config, p->dims, p->in, 0, "ubx", (void *)x);
    for (int i = 0; i <= p->N; i++) ocp_nlp_out_set(p->config, p->dims, p->out, i, "x", p->xs + (size_t)i * p->nx);
    for (int i = 0; i < p->N; i++) ocp_nlp_out_set(p->config, p->dims, p->out, i, "u", p->us + (size_t)i * p->nu);
    int status = SOLVER(solve)(p->capsule);
    ocp_nlp_out_get(p->config, p->dims, p->out, 0, "u", u0);
    if (iterations) {
        int it = 0;
        ocp_nlp_get(p->config, SOLVER(get_nlp_solver)(p->capsule), "sqp_iter", &it);
        *iterations = it;
    }
    return status;
}

/* 1 when the solver's sizes are the plant's. */
static int plan_check(const plan_t *p, int nx, int nu) { return p->dims->nx[0] == nx && p->dims->nu[0] == nu; }

/* A solve for finite differences (warm-started from the stored plan); the rollouts difference it against
 * the step's own solution. */
static void plan_solve_sensitivity(plan_t *p, const double *x, double *u0) { plan_solve(p, x, u0, NULL); }

/* The reference of those differences at x, the step's solution u0 (the same solver: u0 itself). */
static void plan_sensitivity_base(plan_t *p, const double *x, const double *u0, double *base) {
    (void)x;
    memcpy(base, u0, sizeof(double) * (size_t)p->nu);
}

/* Keep the solution as the next initial guess. */
static void plan_store(plan_t *p) {
    for (int i = 0; i <= p->N; i++) ocp_nlp_out_get(p->config, p->dims, p->out, i, "x", p->xs + (size_t)i * p->nx);
    for (int i = 0; i < p->N; i++) ocp_nlp_out_get(p->config, p->dims, p->out, i, "u", p->us + (size_t)i * p->nu);
}

/* Shift the stored plan by one stage for the next step (the last stage is kept, i.e. repeated). */
static void plan_shift(plan_t *p) {
    for (int i = 0; i < p->N; i++)
        memcpy(p->xs + (size_t)i * p->nx, p->xs + (size_t)(i + 1) * p->nx, sizeof(double) * (size_t)p->nx);
    for (int i = 0; i + 1 < p->N; i++)
        memcpy(p->us + (size_t)i * p->nu, p->us + (size_t)(i + 1) * p->nu, sizeof(double) * (size_t)p->nu);
}

#endif /* SCPO_MPC_PLAN_H */
