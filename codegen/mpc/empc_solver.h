/*
 * The embedded MPC's solver: a fixed number of Riccati-factored ADMM iterations on the linear MPC of
 * scpo_ctrl/backup/embedded_mpc.py (whose numpy reference performs the same operations). No heap, no
 * libm (the square root is the FPU's instruction: compile with -fno-math-errno), fixed work, cold start
 * at every call, so the input is a function of the state alone. Compile with -ffp-contract=off: host and
 * Cortex-M4F float32 results are then bit-identical.
 *
 * Include after defining
 *   EMPC_DATA   the generated header with the formulation's constants (empc_data.h)
 *   EMPC_REAL   the arithmetic type (float: the certified solver; double: SCPO's sensitivity twin)
 *   EMPC_SOLVE  the function's name
 *   EMPC_SQRT   the square root of EMPC_REAL (__builtin_sqrtf, __builtin_sqrt)
 * It may be included twice (a float and a double instance); the constants are float32 in both.
 */
#include EMPC_DATA

static void EMPC_SOLVE(const EMPC_REAL x[EMPC_NX], EMPC_REAL u[EMPC_NU])
{
    typedef EMPC_REAL real;
    real zu[EMPC_N][EMPC_NU], yu[EMPC_N][EMPC_NU], du[EMPC_N][EMPC_NU], d[EMPC_N][EMPC_NU];
    real zx[EMPC_N][EMPC_NX], yx[EMPC_N][EMPC_NX], dx[EMPC_N + 1][EMPC_NX]; /* zx, yx: row 0 unused */
    real zw[EMPC_NX], yw[EMPC_NX], p[EMPC_NX], pn[EMPC_NX], r[EMPC_NU], v[EMPC_NX];
    const real alpha = (real)EMPC_RELAXATION, beta = (real)1.0f - (real)EMPC_RELAXATION;
    const real rho_T = (real)empc_rho_T, radius = (real)empc_radius, tau_T = (real)empc_tau_T;
    int it, k, i, j;

    for (k = 0; k < EMPC_N; ++k) {
        for (i = 0; i < EMPC_NU; ++i) { zu[k][i] = (real)0.0f; yu[k][i] = (real)0.0f; }
        for (i = 0; i < EMPC_NX; ++i) { zx[k][i] = (real)0.0f; yx[k][i] = (real)0.0f; }
    }
    for (i = 0; i < EMPC_NX; ++i) { zw[i] = (real)0.0f; yw[i] = (real)0.0f; dx[0][i] = x[i] - (real)empc_x_eq[i]; }

    for (it = 0; it < EMPC_ITERATIONS; ++it) {
        /* backward pass: the penalised LQR's linear terms, p = -rho_T L (zw - yw) at the end */
        for (i = 0; i < EMPC_NX; ++i) {
            real acc = (real)0.0f;
            for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_L[i][j] * (zw[j] - yw[j]);
            p[i] = -rho_T * acc;
        }
        for (k = EMPC_N - 1; k >= 0; --k) {
            for (i = 0; i < EMPC_NU; ++i) r[i] = -(real)empc_rho_u[i] * (zu[k][i] - yu[k][i]);
            for (i = 0; i < EMPC_NU; ++i) {
                real acc = (real)0.0f;
                for (j = 0; j < EMPC_NU; ++j) acc += (real)empc_Hinv[k][i][j] * r[j];
                for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_G[k][i][j] * p[j];
                d[k][i] = acc;
            }
            if (k > 0) {
                for (i = 0; i < EMPC_NX; ++i) {
                    real acc = -(real)empc_rho_x[i] * (zx[k][i] - yx[k][i]);
                    for (j = 0; j < EMPC_NU; ++j) acc -= (real)empc_K[k][j][i] * r[j];
                    for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_AclT[k][i][j] * p[j];
                    pn[i] = acc;
                }
                for (i = 0; i < EMPC_NX; ++i) p[i] = pn[i];
            }
        }
        /* forward pass through the linearised dynamics */
        for (k = 0; k < EMPC_N; ++k) {
            for (i = 0; i < EMPC_NU; ++i) {
                real acc = (real)0.0f;
                for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_K[k][i][j] * dx[k][j];
                du[k][i] = -acc - d[k][i];
            }
            for (i = 0; i < EMPC_NX; ++i) {
                real acc = (real)0.0f;
                for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_A[i][j] * dx[k][j];
                for (j = 0; j < EMPC_NU; ++j) acc += (real)empc_B[i][j] * du[k][j];
                dx[k + 1][i] = acc;
            }
        }
        /* inputs: relaxed copy clamped onto the box, multiplier update */
        for (k = 0; k < EMPC_N; ++k) {
            for (i = 0; i < EMPC_NU; ++i) {
                real vi = alpha * du[k][i] + beta * zu[k][i] + yu[k][i];
                real zi = vi;
                if (zi > (real)empc_du_max[i]) zi = (real)empc_du_max[i];
                if (zi < (real)empc_du_min[i]) zi = (real)empc_du_min[i];
                yu[k][i] = vi - zi;
                zu[k][i] = zi;
            }
        }
        /* states x_1 .. x_{N-1}: prox of the exact penalty of the (tightened) limits */
        for (k = 1; k < EMPC_N; ++k) {
            for (i = 0; i < EMPC_NX; ++i) {
                real vi = alpha * dx[k][i] + beta * zx[k][i] + yx[k][i];
                real zi = vi;
                if (vi > (real)empc_dx_max[i]) {
                    zi = vi - (real)empc_tau_x[i];
                    if (zi < (real)empc_dx_max[i]) zi = (real)empc_dx_max[i];
                } else if (vi < (real)empc_dx_min[i]) {
                    zi = vi + (real)empc_tau_x[i];
                    if (zi > (real)empc_dx_min[i]) zi = (real)empc_dx_min[i];
                }
                yx[k][i] = vi - zi;
                zx[k][i] = zi;
            }
        }
        /* terminal copy w = L' dx_N: prox of the exact penalty of the ball |w| <= sqrt(c) */
        {
            real norm2 = (real)0.0f, scale = (real)1.0f;
            for (i = 0; i < EMPC_NX; ++i) {
                real acc = (real)0.0f;
                for (j = 0; j < EMPC_NX; ++j) acc += (real)empc_L[j][i] * dx[EMPC_N][j];
                v[i] = alpha * acc + beta * zw[i] + yw[i];
                norm2 += v[i] * v[i];
            }
            if (norm2 > radius * radius) {
                real norm = EMPC_SQRT(norm2), shrunk = norm - tau_T;
                scale = (shrunk > radius ? shrunk : radius) / norm;
            }
            for (i = 0; i < EMPC_NX; ++i) {
                real zi = v[i] * scale;
                yw[i] = v[i] - zi;
                zw[i] = zi;
            }
        }
    }
    for (i = 0; i < EMPC_NU; ++i) u[i] = zu[0][i] + (real)empc_u_eq[i];
}
