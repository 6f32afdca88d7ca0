"""A plant file and the data files it names, as plain content a remote worker can rebuild the spec from.

Workers of a cluster share no filesystem with the driver: what they build (a rollout engine, a closed loop) is
rebuilt from the plant file's text and the bytes of the files it names (an expert's CSV), written into a
private folder under the names the plant file uses.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .plant_spec import PlantSpec


def plant_files(spec: PlantSpec, name: str = "plant.yaml") -> dict:
    """``{"name": ..., "plant": text, "data": {name as in the file: base64}}`` for ``spec`` (JSON-ready)."""
    data = {}
    expert = spec.task.expert if spec.task is not None else None
    if expert is not None and expert.data_path is not None:
        relative = os.path.relpath(expert.data_path, Path(spec.source).parent)
        data[relative] = base64.b64encode(Path(expert.data_path).read_bytes()).decode()
    return {"name": name, "plant": spec.text, "data": data}


def write_plant_files(files: dict, folder: Path) -> Path:
    """Write :func:`plant_files` content under ``folder``; returns the plant file's path.

    The plant file sits deep enough below ``folder`` that data files named with ``../`` stay inside it; a name
    that would leave ``folder`` anyway is refused.
    """
    folder = Path(folder).resolve()
    depth = max([len(Path(name).parts) for name in files["data"]] + [1])
    home = folder.joinpath(*(["p"] * depth))
    home.mkdir(parents=True, exist_ok=True)
    for name, data in files["data"].items():
        target = (home / name).resolve()
        if folder not in target.parents:
            raise ValueError(f"data file {name!r} leaves the worker's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
    plant = home / Path(files["name"]).name
    plant.write_text(files["plant"], encoding="utf-8")
    return plant
