"""Exported C: host latency vs onnxruntime, instructions per step (Cortex-M4F under QEMU, host under
callgrind), code size; side by side with CasADi's own generated C for the same control law.

    .venv/bin/python benchmarks/export_performance.py [--run runs/double_integrator] [--onnx-runs 20000]
        [--profiles-only]

RUN_DIR must hold an adapted policy (``scpo-ctrl adapt``). Everything is measured in this command:

* host latency: the vector runner (hil/firmware/vectors.c, gcc -O2) times 128,000 calls of the step with
  clock_gettime; onnxruntime runs the exported ONNX on one state per ``session.run``;
* Cortex-M4F: the same runner under qemu-system-arm mps2-an386 with ``-icount shift=0``: SysTick then
  counts executed instructions (calibrated in the guest), not cycles of a real chip;
* host instructions: valgrind's callgrind, counting only inside the step function;
* code profiles (``export --profile``): speed, size and the unrolled code before profiles, each exported for
  the Cortex-M4 with its own flags and run by the runner under QEMU (instructions per step, -icount), with the
  law object's sizes (``arm-none-eabi-size``) at those flags and at -Os, and the same minus the weights
  (4 bytes per weight and bias); ``--profiles-only`` prints just this table;
* CasADi: ``CodeGenerator`` with ``casadi_real=float`` on the same law (residual network, gate, backup,
  saturation; no monitor), as an SX graph (scalar code) and an MX graph (matrix products), run by the
  same runner through a small shim. CasADi's code is compiled with the same -O2 but without -Werror.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import casadi as ca
import numpy as np
import onnxruntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scpo_ctrl.export import build, firmware  # noqa: E402
from scpo_ctrl.export.c_bundle import PROFILES  # noqa: E402
from scpo_ctrl.export.campaign import equivalence_campaign  # noqa: E402
from scpo_ctrl.export.law import REASON_OK, evaluate, law_from_run  # noqa: E402
from scpo_ctrl.export.run import ExportRequest, run_export  # noqa: E402
from scpo_ctrl.policy.residual import ResidualPolicy  # noqa: E402

HOST_ROUNDS = 2000  # x 64 states: calls timed on the host
BOARDS = ROOT / "hil" / "board"
RUNNER = ROOT / "hil" / "firmware" / "vectors.c"


def casadi_sources(run: Path, symbolic, directory: Path) -> dict:
    """CasADi's generated C (float) for the law with the trained weights as constants; returns sizes."""
    policy, theta, _ = ResidualPolicy.load(run / "policy.npz")
    x = symbolic.sym("x", policy.layout.sizes[0])
    law = ca.Function("law", [x], [policy.control(x, ca.DM(theta))], ["x"], ["u"])
    generator = ca.CodeGenerator("casadi_law.c", {"casadi_real": "float", "with_header": True, "casadi_int": "int"})
    generator.add(law)
    directory.mkdir(parents=True, exist_ok=True)
    generator.generate(str(directory) + "/")
    nx, nu = policy.layout.sizes[0], policy.layout.sizes[-1]
    (directory / "policy_binding.h").write_text(
        "#include <stdint.h>\ntypedef float policy_real_t;\n"
        "typedef struct { int32_t branch; int32_t reason; float gate; float level; uint32_t saturated; } "
        "policy_info_t;\n"
        f"#define POLICY_NX {nx}\n#define POLICY_NU {nu}\n"
        f"#define CASADI_SZ_ARG {law.sz_arg()}\n#define CASADI_SZ_RES {law.sz_res()}\n"
        f"#define CASADI_SZ_IW {law.sz_iw()}\n#define CASADI_SZ_W {law.sz_w()}\n"
        "int32_t policy_step(const policy_real_t *x, policy_real_t *u, policy_info_t *info);\n"
    )
    shutil.copyfile(ROOT / "benchmarks" / "casadi" / "shim.c", directory / "shim.c")
    return {"nodes": law.n_instructions()}


def build_casadi_runner(directory: Path, arm: bool, rounds: int) -> Path:
    common = ["-std=gnu99", "-O2", "-ffp-contract=off", f"-DTIMING_ROUNDS={rounds}", f"-I{BOARDS}", f"-I{directory}"]
    sources = [str(RUNNER), str(directory / "shim.c"), str(directory / "casadi_law.c")]
    if arm:
        out = directory / "vectors.elf"
        command = [build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, *common, *firmware.LINK_FLAGS, "-T",
                   str(BOARDS / "mps2_an386" / "mps2_an386.ld"), str(BOARDS / "mps2_an386" / "board.c"), *sources,
                   "-lm", "-o", str(out)]
    else:
        out = directory / "vectors"
        command = ["gcc", *common, str(BOARDS / "host" / "board.c"), *sources, "-lm", "-o", str(out)]
    build.run_tool(command, directory)
    return out


def casadi_object_sections(directory: Path) -> dict:
    build.run_tool([build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, "-std=gnu99", "-O2", "-ffp-contract=off", "-c",
                    "casadi_law.c", "-o", "casadi_law.o"], directory)
    return build.section_sizes("arm-none-eabi-size", directory / "casadi_law.o")


def elf_size(path: Path) -> dict:
    """text, data, bss of a linked image (Berkeley format: text includes read-only data)."""
    output = build.run_tool(["arm-none-eabi-size", path.name], path.parent).splitlines()[1].split()
    return {"text": int(output[0]), "data": int(output[1]), "bss": int(output[2])}


def host_time_per_step(executable: Path, X: np.ndarray, nu: int, work: Path) -> float:
    """Microseconds per call from the runner's timing line (host timer ticks are microseconds)."""
    _, console = firmware.run_host_runner(executable, X, nu, "float32", work)
    calls, ticks = (int(v) for v in re.search(r"calls=(\d+) step_ticks=(\d+)", console).groups())
    return ticks / calls


def callgrind_per_step(executable: Path, X: np.ndarray, nu: int, work: Path, symbol: str) -> float:
    """Instructions per call of ``symbol`` (inclusive) under callgrind."""
    firmware._write_vectors(work, X, "float32")
    out = work / "callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={symbol}",
                    str(executable)], cwd=work, capture_output=True, check=True)
    text = out.read_text()
    total = int(re.search(r"^(?:totals|summary): (\d+)", text, re.M).group(1))
    return total


def copy_run(source: Path, run: Path) -> Path:
    run.mkdir(parents=True)
    for name in ("plant.yaml", "policy.npz"):
        shutil.copyfile(source / name, run / name)
    return run


def object_at(export: Path, name: str, optimisation: tuple, work: Path) -> dict:
    """Sections of the exported C compiled for the Cortex-M4F with ``optimisation``."""
    work.mkdir(parents=True, exist_ok=True)
    for suffix in (".h", ".c"):
        shutil.copyfile(export / f"{name}_policy{suffix}", work / f"{name}_policy{suffix}")
    return build.compile_object(build.ARM_COMPILER, f"{name}_policy.c", work, f"{name}_policy.o",
                                build.CORTEX_M4_FLAGS, optimisation).sections


def profile_rows(source: Path, work: Path) -> tuple:
    """Per code profile: instructions per step on the Cortex-M4F (QEMU -icount) and the law object's sizes."""
    rows = {}
    for profile in PROFILES:
        run = copy_run(source, work / profile / "run")
        manifest = run_export(ExportRequest(run_dir=str(run), target="cortex-m4", profile=profile)).manifest.to_json()
        law = law_from_run(run)
        X = equivalence_campaign(law, seed=0).X
        X = X[evaluate(law, X).reason == REASON_OK][:64]
        elf = firmware.build_vector_firmware(run / "export", law.name, work / profile / "firmware")
        output, timing = firmware.run_vectors(elf, X, law.nu, "float32", work / profile / "firmware")
        rows[profile] = {
            "instructions": timing.instructions_per_step, "u": output.u,
            "flags": " ".join(build.PROFILE_OPTIMISATION[profile]),
            "object": manifest["builds"]["cortex-m4"]["sections_bytes"],
            "object_os": object_at(run / "export", law.name, ("-Os", "-ffp-contract=off"), work / profile / "os"),
        }
    return law, rows


def print_profiles(law, rows: dict) -> None:
    weights = 4 * sum(W.size + b.size for W, b in zip(law.weights, law.biases))
    print(f"code profiles, network {'-'.join(map(str, law.sizes))}: weights and biases {weights} B "
          f"({weights // 4} float32)")
    print("| profile | flags | Cortex-M4F instructions/step (QEMU -icount) | .text B | .rodata B "
          "| object B | object - weights B | at -Os: object B | at -Os: object - weights B |")
    print("|---|---|---|---|---|---|---|---|---|")
    for profile, row in rows.items():
        obj, small = row["object"], row["object_os"]
        total, total_os = obj["text"] + obj["rodata"] + obj["data"], small["text"] + small["rodata"] + small["data"]
        print(f"| {profile} | {row['flags']} | {row['instructions']:.0f} | {obj['text']} | {obj['rodata']} | {total} "
              f"| {total - weights} | {total_os} | {total_os - weights} |")
    same = all(np.array_equal(row["u"], rows["unrolled"]["u"]) for row in rows.values())
    print(f"same u on the Cortex-M4 in every profile (timed states): {same}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs" / "double_integrator"))
    parser.add_argument("--onnx-runs", type=int, default=20000)
    parser.add_argument("--profiles-only", action="store_true", help="only the code profiles' table")
    args = parser.parse_args()
    source = Path(args.run)
    if not (source / "policy.npz").is_file():
        sys.exit(f"{source}: no policy.npz; run `scpo-ctrl adapt` first")
    with tempfile.TemporaryDirectory() as temporary:
        law, profiles = profile_rows(source, Path(temporary) / "profiles")
    print_profiles(law, profiles)
    if args.profiles_only:
        return
    print()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        run = copy_run(source, work / "run")
        manifest = run_export(ExportRequest(run_dir=str(run), precision="float32", target="cortex-m4")).manifest.to_json()
        law = law_from_run(run)
        campaign = equivalence_campaign(law, seed=0)
        X = campaign.X[evaluate(law, campaign.X).reason == REASON_OK][:64]
        macs = law.multiply_accumulates
        rows = {}

        # ours
        elf = firmware.build_vector_firmware(run / "export", law.name, work / "ours-arm")
        ours_target, timing = firmware.run_vectors(elf, X, law.nu, "float32", work / "ours-arm")
        host = firmware.build_host_runner(run / "export", law.name, work / "ours-host", (f"-DTIMING_ROUNDS={HOST_ROUNDS}",))
        host_cg = firmware.build_host_runner(run / "export", law.name, work / "ours-cg", ("-DTIMING_ROUNDS=16",))
        calls_cg = len(X) + 16 * len(X)
        rows["scpo-ctrl C (float32, speed profile)"] = {
            "arm_instructions": timing.instructions_per_step,
            "host_instructions": callgrind_per_step(host_cg, X, law.nu, work / "ours-cg",
                                                    f"{law.name}_policy_step") / calls_cg,
            "host_us": host_time_per_step(host, X, law.nu, work / "ours-host"),
            "object": manifest["builds"]["cortex-m4"]["sections_bytes"], "elf": elf_size(elf),
            "stack": max(manifest["builds"]["cortex-m4"]["stack_bytes"].values()),
        }
        # CasADi's
        for label, symbolic in (("CasADi SX codegen (float)", ca.SX), ("CasADi MX codegen (float)", ca.MX)):
            directory = work / label.split()[1]
            casadi_sources(run, symbolic, directory)
            elf_c = build_casadi_runner(directory, arm=True, rounds=32)
            target_c, timing_c = firmware.run_vectors(elf_c, X, law.nu, "float32", directory)
            deviation = float(np.max(np.abs(target_c.u - ours_target.u)))
            host_c = build_casadi_runner(directory, arm=False, rounds=HOST_ROUNDS)
            host_us = host_time_per_step(host_c, X, law.nu, directory)
            cg = build_casadi_runner(directory, arm=False, rounds=16)
            rows[label] = {
                "arm_instructions": timing_c.instructions_per_step,
                "host_instructions": callgrind_per_step(cg, X, law.nu, directory, "policy_step") / calls_cg,
                "host_us": host_us, "object": casadi_object_sections(directory), "elf": elf_size(elf_c),
                "stack": None, "max_deviation_from_ours": deviation,
            }

        # onnxruntime, one state per run
        session = onnxruntime.InferenceSession(str(run / "export" / "policy.onnx"), providers=["CPUExecutionProvider"])
        single = X[:1].astype(np.float32)
        for _ in range(200):
            session.run(None, {"x": single})
        start = time.perf_counter()
        for k in range(args.onnx_runs):
            session.run(None, {"x": X[k % len(X)][None, :].astype(np.float32)})
        onnx_us = (time.perf_counter() - start) / args.onnx_runs * 1e6

    print(f"plant {law.name}, network {'-'.join(map(str, law.sizes))} {law.activation}, {macs} multiply-accumulates")
    print(f"onnxruntime {onnxruntime.__version__}, one state per run: {onnx_us:.2f} us")
    print()
    print("| implementation | Cortex-M4F instructions/step (QEMU -icount) | per MAC | host instructions/step "
          "(callgrind) | per MAC | host us/step (-O2) | onnxruntime / this | M4 object .text+.rodata+.data B "
          "| M4 firmware image text+data B |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        obj = row["object"]
        print(f"| {label} | {row['arm_instructions']:.0f} | {row['arm_instructions'] / macs:.2f} "
              f"| {row['host_instructions']:.0f} | {row['host_instructions'] / macs:.2f} | {row['host_us']:.3f} "
              f"| {onnx_us / row['host_us']:.0f}x | {obj['text'] + obj['rodata'] + obj['data']} "
              f"| {row['elf']['text'] + row['elf']['data']} |")
    for label, row in rows.items():
        if "max_deviation_from_ours" in row:
            print(f"{label}: max |u - u_ours| on the timed states {row['max_deviation_from_ours']:.2e}")
    ours = rows["scpo-ctrl C (float32, speed profile)"]
    print(f"stack of the step (ours, Cortex-M4, -fstack-usage): {ours['stack']} B")


if __name__ == "__main__":
    main()
