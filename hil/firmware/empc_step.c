/* The embedded MPC's float32 solver as the vector runner's step (scpo_ctrl/export/empc_target.py): the
 * solver alone, for its equivalence checks and instruction counts. The law's info fields are zero. */
#include "policy_binding.h"

#define EMPC_REAL float
#define EMPC_SOLVE empc_solve_f32
#define EMPC_SQRT __builtin_sqrtf
#include "empc_solver.h"

int32_t policy_step(const float x[EMPC_NX], float u[EMPC_NU], policy_info_t *info)
{
    empc_solve_f32(x, u);
    info->gate = 0.0f;
    info->level = 0.0f;
    info->branch = 0;
    info->reason = 0;
    return 0;
}
