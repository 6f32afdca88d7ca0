"""``scpo-ctrl export RUN_DIR``: write ``RUN_DIR/export/`` (ONNX, C bundle, builds, manifest).

Layout::

    export/policy.onnx                    the law as an ONNX graph (precision of the export)
    export/<name>_policy.h, .c            the deployable C99 bundle
    export/host/<name>_policy_batch.c     host-only helper (tests, verification); not deployed
    export/host/lib<name>_policy.so, .a   host builds (shared: ctypes; static: SIL firmware)
    export/cortex-m4/lib<name>_policy.a   with --target cortex-m4 (and the object, .su stack file; for an
                                          MPC-backed run also the LQR-fallback bundle it was built from)
    export/mpc/, export/host/lib<name>_mpc.so
                                          MPC-backed runs: the acados solver SCPO used (host only), or the
                                          embedded MPC's C (host and Cortex-M4), the controller's C and its
                                          host build (see mpc_bundle.py)
    export/manifest.json                  sha256 of every file above, inputs hash, sizes, self-check

The directory is assembled in a temporary sibling and swapped in at the end,
so an existing export is replaced only by a complete one. Same inputs ->
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from ..version import __version__
from ..config.campaign import load_campaign
from ..config.plant_spec import load_plant_spec
from ..errors import UsageError
from ..files import atomic_write_text, json_safe
from ..run_files import BuildInfo, EquivalenceRecord, ExportManifest, NetworkInfo, OnnxInfo, from_json
from . import build
from .c_bundle import DEFAULT_PROFILE, PRECISIONS, PROFILES, render_bundle, render_host_batch
from ..backup.embedded_mpc_codegen import C_FLAGS, DATA_HEADER
from ..backup.kinds import Backup, backup_for
from .campaign import equivalence_campaign
from .equivalence import compare
from .error_bound import ONNX_ACTIVATION_ULPS
from .host_library import HostLaw
from .law import DeployedLaw, LawOutput, law_digest, law_from_run, lqr_fallback
from .mpc_bundle import MpcController, adapted_solver, build_controller, copy_solver, problem_mpc
from .onnx_model import IR_VERSION, OPSET, build_model

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "scpo-export/1"
#: the Cortex-M4 policy of a law on the embedded MPC (in hil/firmware)
EMBEDDED_POLICY = "empc_policy.c"


@dataclass(frozen=True)
class ExportRequest:
    """What the command line asked for."""

    run_dir: str
    precision: str = "float32"
    target: str = "host"
    profile: str = DEFAULT_PROFILE


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its manifest, and whether the self-check passed."""

    export_dir: Path
    manifest: ExportManifest
    equivalent: bool


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_hash(plant_bytes: bytes, law: DeployedLaw, precision: str, target: str,
                profile: str = "unrolled") -> str:
    """sha256 of what determines the export: the plant file, the law's numbers, precision, target, code
    profile (``unrolled``, the code before profiles, hashes as it did then: its exports stay valid)."""
    digest = hashlib.sha256()
    parts = (hashlib.sha256(plant_bytes).hexdigest(), law_digest(law), precision, target, __version__)
    if profile != "unrolled":
        parts = parts + (f"profile={profile}",)
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def run_export(request: ExportRequest) -> ExportResult:
    """Render, build and self-check the export of a run directory."""
    if request.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {request.precision!r}")
    if request.target not in build.TARGETS:
        raise UsageError(f"--target must be one of {', '.join(build.TARGETS)}, not {request.target!r}")
    if request.profile not in PROFILES:
        raise UsageError(f"--profile must be one of {', '.join(PROFILES)}, not {request.profile!r}")
    run_dir = Path(request.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    law = law_from_run(run_dir)
    spec = load_plant_spec(run_dir / "plant.yaml")
    backup = backup_for(spec.backup.type, spec.backup.solver)
    mpc_files = None if backup.in_closed_form else problem_mpc(spec, law, adapted_solver(run_dir)).mpc.files
    if request.target == "cortex-m4" and not build.tool_available(build.ARM_COMPILER):
        raise UsageError(f"--target cortex-m4 needs {build.ARM_COMPILER} (run scripts/install-debian-packages.sh)")
    plant_bytes = (run_dir / "plant.yaml").read_bytes()
    digest = inputs_hash(plant_bytes, law, request.precision, request.target, request.profile)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=run_dir))
    staging.chmod(0o755)
    try:
        manifest = _assemble(staging, law, backup, request, digest, plant_bytes, mpc_files)
        target = run_dir / "export"
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    equivalent = manifest.self_check_passed
    return ExportResult(export_dir=target, manifest=manifest, equivalent=equivalent)


def _assemble(directory: Path, law: DeployedLaw, backup: Backup, request: ExportRequest, digest: str,
              plant_bytes: bytes, mpc_files=None) -> ExportManifest:
    precision, name, profile = request.precision, law.name, request.profile
    flags = build.PROFILE_OPTIMISATION[profile]
    metadata = {
        "plant": name, "generator": f"scpo-ctrl {__version__}", "precision": precision,
        "inputs_sha256": digest, "law_sha256": law_digest(law),
        "plant_sha256": hashlib.sha256(plant_bytes).hexdigest(),
        "states": json.dumps([f"{n} [{u}]" for n, u in zip(law.state_names, law.state_units)]),
        "inputs": json.dumps([f"{n} [{u}]" for n, u in zip(law.input_names, law.input_units)]),
        "dt_seconds": repr(law.dt), "branch_codes": "0 backup, 1 blend, 2 network, 3 fallback",
        "reason_codes": "0 ok, 1 nonfinite_state, 2 outside_region, 3 nonfinite_output",
    }
    model = build_model(law, precision, metadata)
    (directory / "policy.onnx").write_bytes(model.SerializeToString())
    bundle = render_bundle(law, precision, digest, profile)
    for source in bundle:
        atomic_write_text(directory / source.name, source.text)

    host = directory / "host"
    host.mkdir()
    for source in bundle:
        shutil.copyfile(directory / source.name, host / source.name)
    batch = render_host_batch(law, precision, digest)
    atomic_write_text(host / batch.name, batch.text)
    host_object = build.compile_object(build.HOST_COMPILER, f"{name}_policy.c", host, f"{name}_policy.o",
                                       optimisation=flags)
    build.archive([host_object.path], host, f"lib{name}_policy.a", arm=False)
    build.shared_library([f"{name}_policy.c", batch.name], host, f"lib{name}_policy.so", flags)
    for source in bundle:
        (host / source.name).unlink()
    builds = {"host": _object_summary(host_object, build.HOST_COMPILER, flags=flags)}
    solver_name = controller_library = None
    if mpc_files is not None:
        (directory / "mpc").mkdir()
        copy_solver(mpc_files, directory / "mpc")
        artefacts = build_controller(directory / "mpc", mpc_files.solver_name, host, name)
        solver_name = artefacts.solver_name
        controller_library = str(artefacts.controller_library.relative_to(directory))
    record = backup.manifest_record(request.target, solver_name, controller_library)

    if request.target == "cortex-m4":
        arm = directory / "cortex-m4"
        arm.mkdir()
        # a law on the acados MPC has no Cortex-M4 build (x86-64 acados): the target gets the LQR fallback,
        # whose own bundle stays in cortex-m4/ (it differs from the host's)
        fallback = not backup.cortex_m4_carries_certified_law
        arm_bundle = render_bundle(lqr_fallback(law), precision, digest, profile) if fallback else bundle
        for source in arm_bundle:
            atomic_write_text(arm / source.name, source.text)
        arm_object = build.compile_object(build.ARM_COMPILER, f"{name}_policy.c", arm, f"{name}_policy.o",
                                          build.CORTEX_M4_FLAGS, flags)
        mpc_object = _embedded_policy_object(directory, name, flags) if backup.solver_runs_on_cortex_m4 else None
        objects = [arm_object.path] + ([mpc_object.path] if mpc_object is not None else [])
        build.archive(objects, arm, f"lib{name}_policy.a", arm=True)
        builds["cortex-m4"] = _object_summary(arm_object, build.ARM_COMPILER, build.CORTEX_M4_FLAGS, flags)
        if mpc_object is not None:
            builds["cortex-m4"]["backup"] = "mpc (embedded, the certified law)"
            builds["cortex-m4"]["mpc_object"] = _object_summary(mpc_object, build.ARM_COMPILER,
                                                                (*build.CORTEX_M4_FLAGS, *C_FLAGS), flags)
        elif fallback:
            builds["cortex-m4"]["backup"] = "lqr"
        if not fallback:
            for source in bundle:
                (arm / source.name).unlink()

    checks = self_check(law, directory, precision)
    if request.target == "cortex-m4" and not backup.cortex_m4_carries_certified_law:
        checks.append(_check_lqr_fallback_source(law, directory, precision, profile))
    artefacts = {
        str(path.relative_to(directory)): sha256_file(path)
        for path in sorted(directory.rglob("*")) if path.is_file()
    }
    manifest = ExportManifest(
        format=MANIFEST_FORMAT, generator=f"scpo-ctrl {__version__}", plant=name,
        precision=precision, target=request.target, profile=profile, inputs_sha256=digest,
        plant_sha256=metadata["plant_sha256"], law_sha256=metadata["law_sha256"],
        network=NetworkInfo(sizes=tuple(law.sizes), activation=law.activation,
                            multiply_accumulates=law.multiply_accumulates),
        onnx=OnnxInfo(file="policy.onnx", opset=OPSET, ir_version=IR_VERSION, onnxruntime=onnxruntime.__version__),
        backup=record, builds={target: from_json(BuildInfo, json_safe(info)) for target, info in builds.items()},
        self_check=tuple(EquivalenceRecord(**check) for check in checks), artefacts=artefacts,
    )
    manifest.write(directory / "manifest.json")
    return manifest


def _embedded_policy_object(directory: Path, name: str, flags: tuple) -> build.ObjectReport:
    """``cortex-m4/empc_policy.o``: the embedded MPC's solver with the law on top (``policy_step``,
    ``policy_backup_step``, ``policy_reset`` of the firmware), compiled against the export's ``mpc/``."""
    from ..hil.firmware import write_binding
    from ..resources import resource_dir

    arm = directory / "cortex-m4"
    write_binding(arm, name, mpc_u_init=np.zeros(0))
    # compiled from a copy beside the object with relative include paths: the stack-usage file names the
    # sources as the compiler was given them, and absolute paths (the staging directory's random name, the
    # installation's) made two exports of the same run differ
    shutil.copyfile(resource_dir("hil") / "firmware" / EMBEDDED_POLICY, arm / EMBEDDED_POLICY)
    report = build.compile_object(build.ARM_COMPILER, EMBEDDED_POLICY, arm, "empc_policy.o",
                                  (*build.CORTEX_M4_FLAGS, *C_FLAGS, f'-DEMPC_DATA="{DATA_HEADER}"', "-I../mpc",
                                   "-I..", "-I."), flags)
    for helper in ("policy_binding.h", EMBEDDED_POLICY):
        (arm / helper).unlink()
    return report


def _object_summary(report: build.ObjectReport, compiler: str, extra: tuple = (),
                    flags: tuple = build.OPTIMISATION) -> dict:
    return {
        "object": report.path.name, "compiler": build.compiler_version(compiler),
        "flags": [*build.STRICT_FLAGS, *flags, *extra], "sections_bytes": report.sections,
        "stack_bytes": report.stack,
    }


def self_check(law: DeployedLaw, directory: Path, precision: str) -> list:
    """Host C and ONNX against the reference on a fraction of the campaign (``export_self_check_scale`` of
    ``verification/campaign.yaml``: 2,000 states by default; the full campaign is `verify`'s)."""
    campaign = equivalence_campaign(law, seed=0, scale=_self_check_scale())
    X = campaign.X
    backup = law.backup_kind

    def solve(states: np.ndarray) -> np.ndarray:  # the exported MPC from cold starts (never for the LQR)
        return MpcController(directory / "host" / f"lib{law.name}_mpc.so", law.nx, law.nu, law.u_eq).cold(states).u

    U = backup.campaign_inputs(X, law, solve, seed=0)
    host = HostLaw(directory / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, precision,
                   not backup.in_closed_form)
    results = [compare(law, f"c-host-{precision}", precision, X, host.evaluate(X, U), U_backup=U)]
    results.append(compare(law, f"onnxruntime-{precision}", precision, X,
                           run_onnx(directory / "policy.onnx", X, precision, U),
                           any_order=True, activation_ulps=ONNX_ACTIVATION_ULPS, U_backup=U))
    return [result.to_dict() for result in results]


def _self_check_scale() -> float:
    """The fraction of every equivalence-campaign count ``export`` checks itself on (the campaign file's)."""
    return load_campaign().equivalence.export_self_check_scale


def _check_lqr_fallback_source(law: DeployedLaw, directory: Path, precision: str, profile: str) -> dict:
    """The Cortex-M4 LQR-fallback source compiled for the host against its own reference (the same C the ARM
    build compiled; the ARM build itself runs under QEMU in ``hil --target qemu``)."""
    fallback = lqr_fallback(law)
    X = equivalence_campaign(fallback, seed=0, scale=_self_check_scale()).X
    with tempfile.TemporaryDirectory(prefix="scpo-export-") as temporary:
        arm = directory / "cortex-m4"
        work = Path(temporary)
        for source in (f"{law.name}_policy.h", f"{law.name}_policy.c"):
            shutil.copyfile(arm / source, work / source)
        batch = render_host_batch(fallback, precision, "self-check")
        atomic_write_text(work / batch.name, batch.text)
        library = build.shared_library([f"{law.name}_policy.c", batch.name], work, "libfallback.so",
                                       build.PROFILE_OPTIMISATION[profile])
        host = HostLaw(library, law.name, law.nx, law.nu, precision)
        result = compare(fallback, f"c-host-{precision} (cortex-m4 source, LQR fallback)", precision, X,
                         host.evaluate(X))
    return result.to_dict()


def run_onnx(path: Path, X, precision: str, U_backup=None):
    """The ONNX file under onnxruntime (CPU, default optimisations) on states ``X (N, nx)`` (and the backup's
    inputs ``U_backup (N, nu)`` for an MPC-backed law)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = np.float32 if precision == "float32" else np.float64
    feeds = {"x": np.ascontiguousarray(X, dtype=dtype)}
    if U_backup is not None:
        feeds["u_backup"] = np.ascontiguousarray(U_backup, dtype=dtype)
    u, branch, reason, gate, level = session.run(None, feeds)
    return LawOutput(u=u.astype(float), branch=branch, reason=reason, gate=gate.astype(float),
                     level=level.astype(float))


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (the old export is removed only after the rename)."""
    old = None
    if target.exists():
        old = target.with_name(f".export-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_host_law(law: DeployedLaw, precision: str, directory: Path, input_hash: str = "verification",
                   profile: str = DEFAULT_PROFILE) -> HostLaw:
    """Render and compile the law's C for the host in ``precision`` and code ``profile`` into ``directory``
    (outside any export), e.g. the other precision's twin that verification compares against."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = [*render_bundle(law, precision, input_hash, profile), render_host_batch(law, precision, input_hash)]
    for source in sources:
        atomic_write_text(directory / source.name, source.text)
    library = f"lib{law.name}_policy_{precision}_{profile}.so"
    build.shared_library([s.name for s in sources if s.name.endswith(".c")], directory, library,
                         build.PROFILE_OPTIMISATION[profile])
    return HostLaw(directory / library, law.name, law.nx, law.nu, precision, not law.backup_kind.in_closed_form)
