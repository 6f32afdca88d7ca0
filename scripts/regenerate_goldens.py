"""Regenerate verification/golden/<plant>.json (the generated C's golden vectors) for shipped plants.

    python scripts/regenerate_goldens.py                 # every shipped plant (models/*.yaml)
    python scripts/regenerate_goldens.py double_integrator pendulum

The law of each file: the plant file's backup (LQR, or the MPC's terminal LQR with the backup's input an
input of the law), the residual network of the plant file's widths with *every* layer drawn Glorot-uniform
from numpy's default_rng(SEED) (the last layer too, scaled by LAST_LAYER_SCALE so that most inputs stay
inside their limits: the network, the gate and the blend all act, and few outputs are a saturation limit),
the gate ratio adapt uses. Every number of the law is stored in the file, so the test rebuilds it without this
script, the plant file or a backup design. A file is written only when its vectors agree with the float64
reference law within export's float32 error bound (a golden file must not record a wrong C).

Regenerating changes what the golden test accepts: do it only for a deliberate change of the generated
arithmetic, and say so in the commit. An MPC plant needs acados (scripts/install-acados.sh) to design its
backup here; its test does not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export import golden  # noqa: E402
from scpo_ctrl.export.c_bundle import DEFAULT_PROFILE  # noqa: E402
from scpo_ctrl.export.law import law_from_policy  # noqa: E402
from scpo_ctrl.files import atomic_write_text  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.resources import resource_dir, shipped_plants  # noqa: E402
from scpo_ctrl.scpo.control import residual_policy  # noqa: E402

SEED = 0
LAST_LAYER_SCALE = 0.2


def golden_law(plant: str):
    """The fixed law of a shipped plant (see the module docstring)."""
    spec = load_plant_spec(resource_dir("models") / f"{plant}.yaml")
    policy = residual_policy(build_problem(spec), spec.policy.hidden, spec.policy.activation)
    theta = policy.layout.initial_theta(np.random.default_rng(SEED), zero_last_layer=False)
    n_in, n_out = policy.layout.sizes[-2:]
    last = slice(theta.size - n_out - n_in * n_out, theta.size - n_out)  # the last layer's weights
    theta[last] *= LAST_LAYER_SCALE
    return law_from_policy(policy, theta, spec)


def _dumps(data: dict) -> str:
    """JSON with one line per vector and per matrix row (lists of scalars kept on one line)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[[^\[\]{}]*\]", lambda match: json.dumps(json.loads(match.group(0))), text) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plants", nargs="*", help="shipped plant names (default: all)")
    args = parser.parse_args(argv)
    plants = args.plants or list(shipped_plants())
    unknown = sorted(set(plants) - set(shipped_plants()))
    if unknown:
        print(f"error: not shipped plants: {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = resource_dir("verification") / "golden"
    out.mkdir(exist_ok=True)
    status = 0
    for plant in plants:
        law = golden_law(plant)
        X, U = golden.golden_states(law, seed=SEED)
        with tempfile.TemporaryDirectory(prefix="scpo-golden-") as temporary:
            vectors = golden.compute(law, X, U, Path(temporary), DEFAULT_PROFILE)
        problem = golden.check_against_reference(law, vectors)
        if problem:
            print(f"{plant}: not written: {problem}", file=sys.stderr)
            status = 1
            continue
        provenance = {"seed": SEED, "network": f"every layer Glorot-uniform from numpy default_rng(seed), the "
                                               f"last layer's weights times {LAST_LAYER_SCALE}",
                      "backup": f"models/{plant}.yaml's {law.backup} backup",
                      "regenerate": f"python scripts/regenerate_goldens.py {plant}"}
        data = golden.to_json(golden.Golden(law=law, provenance=provenance, profile=DEFAULT_PROFILE,
                                            vectors=vectors))
        atomic_write_text(out / f"{plant}.json", _dumps(data))
        print(f"{plant}: {len(X)} vectors -> {out / f'{plant}.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
