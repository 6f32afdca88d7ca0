/*
 * The exported MPC backup as a controller (see mpc_controller.h). Host only.
 *
 * Build-time macros: PLAN_HEADER (optional; default mpc_plan.h, the acados plan, whose macros are MODEL,
 * the acados model name, and SOLVER_HEADER, "acados_solver_<MODEL>.h"; empc_plan.h: EMPC_DATA).
 */
#include "mpc_controller.h"

#ifndef PLAN_HEADER
#define PLAN_HEADER "mpc_plan.h"
#endif
#include PLAN_HEADER

struct scpo_mpc_controller {
    plan_t plan;
    double *u_init;
    int cold, iterations;
};

void scpo_mpc_controller_free(scpo_mpc_controller_t *c) {
    if (!c) return;
    plan_free(&c->plan);
    free(c->u_init);
    free(c);
}

scpo_mpc_controller_t *scpo_mpc_controller_create(int nx, int nu, const double *u_init) {
    scpo_mpc_controller_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->u_init = malloc(sizeof(double) * (size_t)nu);
    if (!c->u_init || plan_create(&c->plan, nx, nu) != 0) {
        free(c->u_init);
        free(c);
        return NULL;
    }
    if (!plan_check(&c->plan, nx, nu)) {
        scpo_mpc_controller_free(c);
        return NULL;
    }
    memcpy(c->u_init, u_init, sizeof(double) * (size_t)nu);
    c->cold = 1;
    return c;
}

void scpo_mpc_controller_reset(scpo_mpc_controller_t *c) { c->cold = 1; }

int scpo_mpc_controller_step(scpo_mpc_controller_t *c, const double *x, double *u0) {
    if (c->cold) {
        plan_cold(&c->plan, x, c->u_init);
        c->cold = 0;
    }
    int status = plan_solve(&c->plan, x, u0, &c->iterations);
    plan_store(&c->plan);
    plan_shift(&c->plan);
    return status;
}

int scpo_mpc_controller_iterations(const scpo_mpc_controller_t *c) { return c->iterations; }

void scpo_mpc_controller_sequence(scpo_mpc_controller_t *c, int n, const double *X, double *U, int *status,
                                  int *iterations) {
    scpo_mpc_controller_reset(c);
    for (int k = 0; k < n; k++) {
        status[k] = scpo_mpc_controller_step(c, X + (size_t)k * c->plan.nx, U + (size_t)k * c->plan.nu);
        iterations[k] = c->iterations;
    }
}
