"""Read a run directory's files into frozen dataclasses for the report.

Nothing here computes a number the page shows: values are parsed from the
files as they are (JSON, YAML, NPZ) and the template only formats them. Each
file is read once; its sha256 is taken over the same bytes that are parsed,
so a hash on the page always belongs to the numbers next to it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import yaml

from ..errors import UsageError
from ..run_files import (AdaptationSummary, Certificate, ExportManifest, HilIndex, HilReport, RunFile,
                         RunFileError, to_json)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One file of the run directory: its path relative to the run directory and its sha256."""

    path: str
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class Image:
    """A PNG of the run directory, embedded as a data URI."""

    title: str
    source: Source
    data_uri: str


@dataclass(frozen=True)
class Section:
    """One section of the page. ``data`` holds the parsed files (read-only); ``missing`` is the
    one-line note shown instead when the section's data does not exist yet."""

    id: str
    title: str
    sources: tuple = ()
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    images: tuple = ()
    missing: str | None = None

    @property
    def present(self) -> bool:
        return self.missing is None


@dataclass(frozen=True)
class RunData:
    """Everything the page shows, section by section, in page order."""

    run_dir: str
    name: str
    sections: tuple

    def section(self, section_id: str) -> Section:
        for section in self.sections:
            if section.id == section_id:
                return section
        raise KeyError(section_id)

    @property
    def sources(self) -> tuple:
        """Every file the page was built from, once each, in order of first use."""
        seen: dict = {}
        for section in self.sections:
            for source in section.sources:
                seen.setdefault(source.path, source)
            for image in section.images:
                seen.setdefault(image.source.path, image.source)
        return tuple(seen.values())


class _Reader:
    """Reads files of one run directory, hashing the bytes it parses."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def exists(self, relative: str) -> bool:
        return (self.run_dir / relative).is_file()

    def raw(self, relative: str) -> tuple:
        data = (self.run_dir / relative).read_bytes()
        return data, Source(relative, hashlib.sha256(data).hexdigest())

    def typed(self, relative: str, kind: type[RunFile]) -> tuple:
        """The file as its :mod:`scpo_ctrl.run_files` dataclass ``kind``, and its source."""
        data, source = self.raw(relative)
        return kind.loads(data, self.run_dir / relative), source

    def jsonl(self, relative: str) -> tuple:
        data, source = self.raw(relative)
        rows = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{self.run_dir / relative}:{number}: not valid JSON ({exc})") from None
        return rows, source

    def yaml(self, relative: str) -> tuple:
        data, source = self.raw(relative)
        try:
            return yaml.safe_load(data.decode("utf-8")), source
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UsageError(f"{self.run_dir / relative}: not valid YAML ({exc})") from None

    def npz(self, relative: str) -> tuple:
        data, source = self.raw(relative)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (ValueError, OSError) as exc:
            raise UsageError(f"{self.run_dir / relative}: not a readable .npz ({exc})") from None
        return {key: _plain(value) for key, value in arrays.items()}, source

    def image(self, relative: str, title: str) -> Image | None:
        if not self.exists(relative):
            return None
        data, source = self.raw(relative)
        return Image(title, source, "data:image/png;base64," + base64.b64encode(data).decode("ascii"))


def _plain(value: np.ndarray):
    """A numpy array from an .npz as plain Python values (nested lists, floats, ints, str)."""
    return value.tolist()


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(dict(mapping))


def _missing(section_id: str, title: str, command: str) -> Section:
    return Section(section_id, title, missing=f"not run yet: {command}")


def gather(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` into a :class:`RunData` (sections without their files carry a ``missing`` note).

    Raises
    ------
    UsageError
        If ``run_dir`` is not a directory, holds none of a run's files, or a file is malformed.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise UsageError(f"{run_dir}: not a directory (expected a run directory written by `scpo-ctrl adapt`)")
    reader = _Reader(root)
    if not any(reader.exists(name) for name in ("plant.yaml", "adaptation.json", "policy.npz")):
        raise UsageError(f"{run_dir}: not a run directory (no plant.yaml, adaptation.json or policy.npz)")
    sections = tuple(_section(build, reader) for build in (
        _plant, _backup, _training, _verification_loop, _rollouts, _export, _equivalence, _certificate, _hil))
    name = root.resolve().name
    plant = sections[0]
    if plant.present and isinstance(plant.data.get("plant"), dict):
        name = str(plant.data["plant"].get("name", name))
    return RunData(run_dir=str(run_dir), name=name, sections=sections)


def _section(build, reader: _Reader) -> Section:
    """``build(reader)``; a run file its typed reader refuses (say, written by an older scpo-ctrl without a
    field this one records) leaves that section out with the reason instead of failing the whole page."""
    try:
        return build(reader)
    except RunFileError as exc:
        if not exc.key_path:  # not JSON at all, or not an object: a broken file is bad input
            raise
        log.warning("report: %s", exc)
        section_id = {"_verification_loop": "verification"}.get(build.__name__, build.__name__.lstrip("_"))
        return Section(section_id, section_id.capitalize(),
                       missing=f"not shown: {exc} (written by another version of scpo-ctrl? re-run that verb)")


def _plant(reader: _Reader) -> Section:
    if not reader.exists("plant.yaml"):
        return _missing("plant", "Plant and limits", "scpo-ctrl adapt PLANT.yaml")
    plant, source = reader.yaml("plant.yaml")
    if not isinstance(plant, dict):
        raise UsageError(f"{reader.run_dir / 'plant.yaml'}: not a plant file (a mapping was expected)")
    return Section("plant", "Plant and limits", (source,), _frozen({"plant": plant}))


def _backup(reader: _Reader) -> Section:
    if not reader.exists("policy.npz"):
        return _missing("backup", "Backup, gains and target set", "scpo-ctrl adapt PLANT.yaml")
    policy, source = reader.npz("policy.npz")
    sources = [source]
    data = {"policy": policy, "backup": None}
    if reader.exists("plant.yaml"):
        plant, plant_source = reader.yaml("plant.yaml")
        if isinstance(plant, dict):
            data["backup"] = plant.get("backup")
            data["safety"] = plant.get("safety")
            sources.append(plant_source)
    return Section("backup", "Backup, gains and target set", tuple(sources), _frozen(data))


def _training(reader: _Reader) -> Section:
    if not reader.exists("adaptation.json"):
        return _missing("training", "Training", "scpo-ctrl adapt PLANT.yaml")
    summary, source = reader.typed(AdaptationSummary.RELATIVE_PATH, AdaptationSummary)
    sources = [source]
    data = {"summary": summary, "iterations": []}
    if reader.exists("config.resolved.yaml"):
        config, config_source = reader.yaml("config.resolved.yaml")
        data["config"] = config
        sources.append(config_source)
    if reader.exists("training.jsonl"):
        rows, rows_source = reader.jsonl("training.jsonl")
        data["iterations"] = rows
        sources.append(rows_source)
    image = reader.image("plots/training.png", "Training curves: loss, worst constraint value, accepted/rejected steps, l")
    return Section("training", "Training", tuple(sources), _frozen(data), tuple(i for i in (image,) if i))


LOOP_TITLE = "Verification loop"


@dataclass(frozen=True)
class LoopRound:
    """One round of the verification loop as read from its iteration's line of ``training.jsonl``.

    Attributes
    ----------
    iteration : int
        The iteration after which the round ran.
    round : Mapping
        The line's ``verification_round`` entry as written (``RoundResult.to_dict``).
    loss_before : float or None
        The line's ``loss`` (the iterate's loss before the round).
    loss_after : float or None
        The line's ``loss_after_round`` (after the validation set grew and any retreat).
    """

    iteration: int
    round: Mapping[str, Any]
    loss_before: float | None
    loss_after: float | None


def _loop_rounds(lines: list) -> tuple:
    """The :class:`LoopRound` of every line of ``training.jsonl`` that carries a ``verification_round``."""
    return tuple(
        LoopRound(line.get("iteration"), _frozen(line["verification_round"]), line.get("loss"),
                  line.get("loss_after_round"))
        for line in lines if isinstance(line.get("verification_round"), dict))


def _loop_off_note(summary: AdaptationSummary) -> str | None:
    """The one-line note for a run whose summary shows the loop did not run (None: it ran)."""
    loop = summary.verification_loop
    if loop is None:
        return "not in this run: adaptation.json predates the verification loop (no verification_loop entry)"
    if not loop.enabled:
        if summary.method != "scpo":
            return f"off for this run: the loop runs with --method scpo only (this run: {summary.method})"
        return ("off for this run (scpo-ctrl adapt --no-verify-loop): "
                "the validation set stayed as the plant file gives it")
    return None


def _verification_loop(reader: _Reader) -> Section:
    if not reader.exists("adaptation.json"):
        return _missing("verification", LOOP_TITLE, "scpo-ctrl adapt PLANT.yaml")
    summary, source = reader.typed(AdaptationSummary.RELATIVE_PATH, AdaptationSummary)
    note = _loop_off_note(summary)
    if note is not None:
        return Section("verification", LOOP_TITLE, missing=note)
    if not reader.exists("training.jsonl"):
        return Section("verification", LOOP_TITLE, missing="training.jsonl is missing: the rounds are recorded there")
    lines, lines_source = reader.jsonl("training.jsonl")
    rounds = _loop_rounds(lines)
    if not rounds:
        return Section("verification", LOOP_TITLE,
                       missing="on, but no round ran before the run ended (training.jsonl has no verification_round)")
    from .plots import loop_png

    title = "Verification loop: loss with the rounds marked, validation-set size and proven fraction of the box"
    png = loop_png(lines, rounds, title, summary.verification_loop.initial_validation_states)
    image = Image(title, lines_source, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
    data = {"loop": summary.verification_loop, "rounds": rounds}
    return Section("verification", LOOP_TITLE, (source, lines_source), _frozen(data), (image,))


def _rollouts(reader: _Reader) -> Section:
    images = tuple(i for i in (
        reader.image("plots/rollouts.png", "Rollouts of the backup, the expert and the adapted policy"),
        reader.image("plots/phase.png", "Phase portraits with the constraint boundaries and the target set"),
    ) if i)
    if not images:
        return _missing("rollouts", "Rollouts and phase portraits", "scpo-ctrl adapt PLANT.yaml")
    return Section("rollouts", "Rollouts and phase portraits", tuple(i.source for i in images), _frozen({}), images)


def _export(reader: _Reader) -> Section:
    if not reader.exists("export/manifest.json"):
        return _missing("export", "Export", "scpo-ctrl export RUN_DIR")
    manifest, source = reader.typed(ExportManifest.RELATIVE_PATH, ExportManifest)
    sources = [source]
    data = {"manifest": manifest, "closed_loop": None, "hil_compute": {}}
    if reader.exists(Certificate.RELATIVE_PATH):
        certificate, certificate_source = reader.typed(Certificate.RELATIVE_PATH, Certificate)
        for check in certificate.checks:
            if check.name == "closed_loop_safety":
                data["closed_loop"] = check.details
                sources.append(certificate_source)
    if reader.exists(HilIndex.RELATIVE_PATH):
        hil, hil_source = reader.typed(HilIndex.RELATIVE_PATH, HilIndex)
        data["hil_compute"] = {name: target.compute for name, target in hil.targets.items()}
        if data["hil_compute"]:
            sources.append(hil_source)
    return Section("export", "Export: sizes and timings", tuple(sources), _frozen(data))


def _equivalence(reader: _Reader) -> Section:
    rows = []
    sources = []
    if reader.exists(ExportManifest.RELATIVE_PATH):
        manifest, source = reader.typed(ExportManifest.RELATIVE_PATH, ExportManifest)
        for entry in manifest.self_check:
            rows.append({"where": "export self-check", **to_json(entry)})
        sources.append(source)
    if reader.exists(Certificate.RELATIVE_PATH):
        certificate, source = reader.typed(Certificate.RELATIVE_PATH, Certificate)
        for check in certificate.checks:
            if check.name == "equivalence":
                for entry in check.details.get("implementations", []):
                    rows.append({"where": "verify campaign", **entry})
                sources.append(source)
    if not rows:
        return _missing("equivalence", "Equivalence", "scpo-ctrl export RUN_DIR")
    return Section("equivalence", "Equivalence of the exported implementations", tuple(sources),
                   _frozen({"rows": rows}))


def _certificate(reader: _Reader) -> Section:
    if not reader.exists("certificate.json"):
        return _missing("certificate", "Certificate", "scpo-ctrl verify RUN_DIR")
    certificate, source = reader.typed(Certificate.RELATIVE_PATH, Certificate)
    sources = [source]
    data = {"certificate": certificate, "manifest_matches": None}
    if reader.exists(ExportManifest.RELATIVE_PATH):
        _, manifest_source = reader.raw(ExportManifest.RELATIVE_PATH)
        data["manifest_matches"] = manifest_source.sha256 == certificate.manifest_sha256
        sources.append(manifest_source)
    checks = {check.name: check for check in certificate.checks}
    data["checks_by_name"] = checks
    images = ()
    safety = checks.get("closed_loop_safety")
    rows = safety.details.get("rows") if safety is not None else None
    if rows:
        from .plots import margins_png

        worst = {name: row["worst"] for name, row in rows.items() if isinstance(row.get("worst"), (int, float))}
        if worst:
            title = "Safety margins (certificate.json, closed_loop_safety)"
            png = margins_png(worst, title)
            images = (Image(title, source, "data:image/png;base64," + base64.b64encode(png).decode("ascii")),)
    return Section("certificate", "Certificate: verdicts and margins", tuple(sources), _frozen(data), images)


def _hil(reader: _Reader) -> Section:
    if not reader.exists("hil/report.json"):
        return _missing("hil", "Hardware in the loop", "scpo-ctrl hil RUN_DIR --target sil")
    summary, source = reader.typed(HilIndex.RELATIVE_PATH, HilIndex)
    sources = [source]
    targets = []
    images = []
    for name in summary.targets:
        relative = HilReport.relative_path(name)
        if reader.exists(relative):
            report, target_source = reader.typed(relative, HilReport)
            sources.append(target_source)
        else:
            report, target_source = summary.targets[name], source
        target_images = tuple(i for i in (
            reader.image(f"hil/{name}/traces.png", f"{name}: HIL traces vs the Python closed loop"),
            reader.image(f"hil/{name}/latency.png", f"{name}: round-trip latency"),
        ) if i)
        images.extend(target_images)
        targets.append({"name": name, "report": report, "source": target_source, "images": target_images})
    return Section("hil", "Hardware in the loop", tuple(sources), _frozen({"targets": targets}), tuple(images))
