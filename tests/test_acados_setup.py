"""``scpo-ctrl setup-acados``: atomic, idempotent, one clear line on failure (pip replaced by a stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scpo_ctrl.backup import acados_env, acados_setup
from scpo_ctrl.backup.acados_setup import AcadosSetupError, setup_acados, stamp_path
from scpo_ctrl.cli import main


def _fake_wheel(directory: Path, python: str) -> None:
    """What ``pip install --target`` leaves from comma-deps-acados: acados' files and a slim casadi."""
    for relative in ("acados/install/lib/libacados.so", "acados/install/bin/t_renderer",
                     "acados/acados_template/__init__.py", "casadi/__init__.py"):
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text("")


@pytest.fixture
def pip_calls(monkeypatch) -> list:
    calls = []

    def fake(directory, python):
        calls.append(directory)
        _fake_wheel(directory, python)

    monkeypatch.setattr(acados_setup, "_pip_install", fake)
    return calls


def test_installs_once_without_the_bundled_casadi(tmp_path, pip_calls):
    target = tmp_path / "acados"
    first = setup_acados(target)
    assert not first.already_installed and first.directory == target
    assert stamp_path(target).is_file() and not acados_env.missing_files(target)
    assert not (target / "casadi").exists()
    assert setup_acados(target).already_installed and len(pip_calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acados"]  # no partial or old directory left


def test_an_incomplete_directory_is_replaced(tmp_path, pip_calls):
    target = tmp_path / "acados"
    (target / "acados").mkdir(parents=True)
    (target / "leftover").write_text("from an interrupted copy")
    assert not setup_acados(target).already_installed
    assert not (target / "leftover").exists() and stamp_path(target).is_file()


def test_a_pip_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def failing(directory, python):
        (directory / "half").write_text("")
        raise AcadosSetupError("pip could not install comma-deps-acados==0.2.2.post92: no matching distribution")

    monkeypatch.setattr(acados_setup, "_pip_install", failing)
    with pytest.raises(AcadosSetupError):
        setup_acados(tmp_path / "acados")
    assert list(tmp_path.iterdir()) == []


def test_default_target_is_the_environment_variable_else_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(acados_env.VENDOR_ENVIRONMENT_VARIABLE, raising=False)
    assert acados_env.install_target() == (tmp_path / "data" / "scpo-ctrl" / "acados").resolve()
    assert acados_env.candidate_dirs()[-1] == acados_env.install_target()
    monkeypatch.setenv(acados_env.VENDOR_ENVIRONMENT_VARIABLE, str(tmp_path / "elsewhere"))
    assert acados_env.install_target() == acados_env.candidate_dirs()[0] == (tmp_path / "elsewhere").resolve()


def test_acados_installed_in_the_user_data_dir_is_found(tmp_path, monkeypatch, pip_calls):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(acados_env.VENDOR_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(acados_env, "source_checkout", lambda: None)  # as in an installed package
    setup_acados()
    assert acados_env.find_acados().root == acados_env.user_acados_dir()


def test_cli_reports_a_failure_in_one_line(tmp_path, monkeypatch, capsys):
    def failing(directory, python):
        raise AcadosSetupError("pip could not install comma-deps-acados==0.2.2.post92: no network")

    monkeypatch.setattr(acados_setup, "_pip_install", failing)
    assert main(["setup-acados", "--dir", str(tmp_path / "acados")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: pip could not install") and "Traceback" not in err


def test_cli_says_where_it_installed(tmp_path, pip_calls, capsys):
    assert main(["setup-acados", "--dir", str(tmp_path / "acados")]) == 0
    assert main(["setup-acados", "--dir", str(tmp_path / "acados")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"installed in {tmp_path / 'acados'}") and "already installed" in out[1]
