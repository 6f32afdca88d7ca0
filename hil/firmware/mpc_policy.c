/* The firmware's policy for an MPC-backed law (host SIL only): the exported acados controller gives
 * the backup's input, the generated law puts the network, gate, saturation and monitor on top.
 *
 * policy_step runs one MPC step (warm-started from the previous plan, shifted; cold after
 * policy_reset, which the firmware calls on CONFIG, i.e. at the start of every episode) and then the
 * law on (x, u_backup). policy_backup_step, the watchdog's answer, runs the MPC step and the
 * saturated backup. The acados solver allocates on the heap when it is created (once, at the
 * first step): this file is for the host, where the acados libraries exist.
 */
#include <stdio.h>
#include <stdlib.h>

#include "mpc_controller.h"
#include "policy_binding.h"

static scpo_mpc_controller_t *controller;

static scpo_mpc_controller_t *mpc(void)
{
    static const double u_init[POLICY_NU] = POLICY_MPC_U_INIT;
    if (!controller) {
        controller = scpo_mpc_controller_create(POLICY_NX, POLICY_NU, u_init);
        if (!controller) {
            fputs("hil firmware: the acados MPC could not be created\n", stderr);
            exit(3);
        }
    }
    return controller;
}

/* The MPC's input at x, rounded to the law's type. */
static void backup_input(const policy_real_t x[POLICY_NX], policy_real_t u_backup[POLICY_NU])
{
    double xd[POLICY_NX], ud[POLICY_NU];
    int i;
    for (i = 0; i < POLICY_NX; ++i) {
        xd[i] = (double)x[i];
    }
    (void)scpo_mpc_controller_step(mpc(), xd, ud);
    for (i = 0; i < POLICY_NU; ++i) {
        u_backup[i] = (policy_real_t)ud[i];
    }
}

void policy_reset(void)
{
    scpo_mpc_controller_reset(mpc());
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
