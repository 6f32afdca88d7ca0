/* Adapts a CasADi-generated function `law(x) -> u` to the vector runner's policy_step interface,
 * so the same runner times CasADi's code and ours. Benchmark only. */
#include "policy_binding.h"
#include "casadi_law.h"

static const casadi_real *arg[CASADI_SZ_ARG];
static casadi_real *res[CASADI_SZ_RES];
static casadi_int iw[CASADI_SZ_IW + 1];
static casadi_real w[CASADI_SZ_W + 1];

int32_t policy_step(const policy_real_t *x, policy_real_t *u, policy_info_t *info)
{
    arg[0] = x;
    res[0] = u;
    (void)law(arg, res, iw, w, 0);
    info->branch = 0;
    info->reason = 0;
    info->gate = 0;
    info->level = 0;
    info->saturated = 0u;
    return 0;
}
