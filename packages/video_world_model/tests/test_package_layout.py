"""The package's layout: about fifteen names at the top, the rest in sub-packages, and the names that moved in 0.6
still importable from the top (with a warning naming the new path) until 0.7."""

import importlib
import subprocess
import sys
import warnings

import pytest

import kinema.video_world_model as wm


def test_the_top_level_names_import_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in wm.__all__:
            assert getattr(wm, name) is not None, name
    assert len(wm.__all__) <= 20
    assert not set(wm.__all__) & set(wm.MOVED)


@pytest.mark.parametrize("name", sorted(wm.MOVED))
def test_a_moved_name_is_the_sub_package_s_object_with_a_warning_naming_the_new_path(name):
    new_module = f"kinema.video_world_model.{wm.MOVED[name]}"
    with pytest.warns(DeprecationWarning, match=rf"moved to {new_module}\.{name}\b"):
        old = getattr(wm, name)
    assert old is getattr(importlib.import_module(new_module), name)
    assert name in importlib.import_module(new_module).__all__
    assert name in dir(wm)


def test_the_old_from_import_form_warns_too():
    with pytest.warns(DeprecationWarning, match="kinema.video_world_model.causal.CausalWanModel"):
        from kinema.video_world_model import CausalWanModel  # noqa: F401


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        wm.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "module",
    [
        "kinema.video_world_model.testing",  # imported the causal fixtures from a module that imported it back
        "kinema.video_world_model.causal._checkpoint",
        "kinema.video_world_model.loading._checkpoint",
        "kinema.video_world_model.training._trainer",
        "kinema.video_world_model.cli",
        "kinema.video_world_model.vace_e.testing",
    ],
)
def test_a_module_imports_alone_in_a_fresh_interpreter(module):
    """Imports that work only when something else was imported first are import cycles waiting to fail."""
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_python_m_cli_runs_the_console_script_s_main():
    result = subprocess.run(
        [sys.executable, "-m", "kinema.video_world_model.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kinema-wm {wm.__version__}"
