/*
 * The exported MPC backup as a controller: one acados solver and its warm-start plan (host only;
 * the acados libraries bundled with scpo-ctrl are x86-64 builds).
 *
 * scpo_mpc_controller_step() performs exactly the step of SCPO's rollouts (mpc_plan.h): the first
 * call after create/reset starts from the cold plan, later calls from the previous plan shifted by
 * one stage. So a closed loop driven through this controller sees the inputs SCPO certified.
 */
#ifndef SCPO_MPC_CONTROLLER_H
#define SCPO_MPC_CONTROLLER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct scpo_mpc_controller scpo_mpc_controller_t;

/* nx, nu: the plant's sizes (checked against the solver's); u_init (nu): the cold plan's input.
 * NULL on failure (sizes differ, or acados could not allocate). */
scpo_mpc_controller_t *scpo_mpc_controller_create(int nx, int nu, const double *u_init);
void scpo_mpc_controller_free(scpo_mpc_controller_t *c);

/* The next step starts a new trajectory (cold plan). */
void scpo_mpc_controller_reset(scpo_mpc_controller_t *c);

/* The MPC's first input u0 (nu) at state x (nx). Returns acados' status (0: converged); u0 is
 * acados' last iterate whatever the status (as in SCPO's rollouts). */
int scpo_mpc_controller_step(scpo_mpc_controller_t *c, const double *x, double *u0);

/* SQP iterations of the last step. */
int scpo_mpc_controller_iterations(const scpo_mpc_controller_t *c);

/* A trajectory of n steps at states X (n nx): reset, then step on each row; U (n nu), status (n),
 * iterations (n). For the Python side's reference of a HIL session. */
void scpo_mpc_controller_sequence(scpo_mpc_controller_t *c, int n, const double *X, double *U, int *status,
                                  int *iterations);

#ifdef __cplusplus
}
#endif

#endif /* SCPO_MPC_CONTROLLER_H */
