/* The firmware's policy for a law on the embedded MPC (scpo-ctrl's `solver: admm` backup): the float32 ADMM
 * solver of mpc/empc_solver.h gives the backup's input, the generated law puts the network, gate, saturation
 * and monitor on top. This is the certified law: SCPO's rollouts ran the same solver C (compiled for the host
 * through codegen/mpc/empc_plan.h, which rounds the state to float32 as the wire does). No heap, no libm,
 * fixed work; the solver is a function of the state (cold start every step), so policy_reset has nothing to
 * do. Compile with -ffp-contract=off -fno-math-errno and -DEMPC_DATA='"empc_data.h"'; the export builds it
 * into cortex-m4/lib<name>_policy.a. */
#include "policy_binding.h"

#define EMPC_REAL float
#define EMPC_SOLVE empc_solve_f32
#define EMPC_SQRT __builtin_sqrtf
#include "empc_solver.h"

#if POLICY_NX != EMPC_NX || POLICY_NU != EMPC_NU
#error "the embedded MPC's sizes differ from the law's"
#endif

/* The MPC's input at x, in the law's type. */
static void backup_input(const policy_real_t x[POLICY_NX], policy_real_t u_backup[POLICY_NU])
{
    float xf[EMPC_NX], uf[EMPC_NU];
    int i;
    for (i = 0; i < EMPC_NX; ++i) {
        xf[i] = (float)x[i];
    }
    empc_solve_f32(xf, uf);
    for (i = 0; i < EMPC_NU; ++i) {
        u_backup[i] = (policy_real_t)uf[i];
    }
}

void policy_reset(void)
{
}

int32_t policy_step(const policy_real_t x[POLICY_NX], policy_real_t u[POLICY_NU], policy_info_t *info)
{
    policy_real_t u_backup[POLICY_NU];
    backup_input(x, u_backup);
    return policy_law_step(x, u_backup, u, info);
}

void policy_backup_step(const policy_real_t x[POLICY_NX], policy_real_t u[POLICY_NU])
{
    policy_real_t u_backup[POLICY_NU];
    backup_input(x, u_backup);
    policy_law_backup_step(x, u_backup, u);
}
