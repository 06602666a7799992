"""Flower App Bundles (FABs): build, identify, install and load.

A FAB is the archive ``flwr build`` makes; fednode builds it with the same
library function, so a FAB built here and one built by ``flwr build`` from
the same directory are byte-identical. A FAB is identified by the lower-case
hex SHA-256 of its bytes, and that is the digest an operator approves.

Loading an app imports its Python package into this process. Python caches
modules by name, so before importing from a FAB's install directory the loader
evicts any cached module of the same top-level package that came from
elsewhere: a node must never run code other than the FAB it verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flwr.cli.build import build_fab_from_disk
from flwr.cli.config_utils import get_fab_metadata
from flwr.cli.install import install_from_fab
from flwr.clientapp import ClientApp
from flwr.common.config import flatten_dict, fuse_dicts, get_fab_config
from flwr.serverapp import ServerApp

from node.fl.errors import AppBundleError, JobFileError

__all__ = [
    "AppBundle",
    "build_bundle",
    "fused_run_config",
    "install_bundle",
    "load_client_app",
    "load_server_app",
    "read_bundle",
]

_import_lock = threading.Lock()


@dataclass(frozen=True)
class AppBundle:
    """A FAB's bytes with what identifies it."""

    data: bytes
    sha256: str
    fab_id: str
    version: str
    #: The app's default run config, flattened (``[tool.flwr.app.config]``).
    default_config: dict[str, Any]

    @property
    def name(self) -> str:
        return self.fab_id.split("/", 1)[-1]


def read_bundle(data: bytes) -> AppBundle:
    """Identify FAB bytes.

    Raises:
        AppBundleError: the bytes are not a FAB with a valid pyproject.toml.
    """
    try:
        fab_id, version = get_fab_metadata(data)
        config = get_fab_config(data)
    except Exception as e:  # zip, TOML and Flower's own validation all raise
        raise AppBundleError(
            f"not a valid Flower App Bundle: {e}",
            hint="build it with 'flwr build' or point the job at the app directory",
        ) from e
    defaults = flatten_dict(config["tool"]["flwr"]["app"].get("config", {}))
    return AppBundle(data, hashlib.sha256(data).hexdigest(), fab_id, version, defaults)


def build_bundle(source: Path) -> AppBundle:
    """A FAB from an app directory (built as ``flwr build`` does) or a ``.fab`` file.

    Raises:
        AppBundleError: the path is neither, or the app does not build.
    """
    if source.is_dir():
        try:
            data = build_fab_from_disk(source)
        except (ValueError, click.ClickException, OSError) as e:
            raise AppBundleError(
                f"cannot build a FAB from {source}: {e}",
                hint="check the app's pyproject.toml [tool.flwr.app] section",
            ) from e
    elif source.is_file():
        data = source.read_bytes()
    else:
        raise AppBundleError(
            f"app {source} does not exist", hint="name an app directory or a .fab file"
        )
    return read_bundle(data)


def fused_run_config(bundle: AppBundle, overrides: dict[str, Any]) -> dict[str, Any]:
    """The app's ``[tool.flwr.app.config]`` with the job's overrides applied.

    Raises:
        JobFileError: an override names a key the app does not declare.
    """
    try:
        return dict(fuse_dicts(bundle.default_config, flatten_dict(overrides)))
    except ValueError as e:
        raise JobFileError(
            f"run config override rejected: {e}",
            hint=f"declared keys are: {', '.join(sorted(bundle.default_config))}",
        ) from e


def install_bundle(bundle: AppBundle, apps_dir: Path) -> Path:
    """Unpack a FAB (its per-file hashes checked by Flower) under ``apps_dir``.

    Raises:
        AppBundleError: the archive is malformed or a file hash does not verify.
    """
    try:
        # Flower's installer prints a success line for a terminal; a node logs instead.
        with contextlib.redirect_stdout(io.StringIO()):
            return Path(install_from_fab(bundle.data, apps_dir, skip_prompt=True))
    except (click.ClickException, ValueError, OSError) as e:
        raise AppBundleError(f"cannot install FAB {bundle.sha256[:12]}: {e}") from e


def _component(app_dir: Path, which: str) -> Any:
    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
        ref = str(config["tool"]["flwr"]["app"]["components"][which])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise AppBundleError(f"app in {app_dir} declares no {which} component") from e
    module_name, _, attribute = ref.partition(":")
    top = module_name.split(".", 1)[0]
    with _import_lock:
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if not Path(origin).resolve().is_relative_to(app_dir.resolve()):
                del sys.modules[name]
        if str(app_dir) in sys.path:
            sys.path.remove(str(app_dir))
        sys.path.insert(0, str(app_dir))
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except Exception as e:  # the app's import may raise anything
            raise AppBundleError(f"cannot load {which} {ref!r}: {e}") from e
    return obj


def load_client_app(app_dir: Path) -> ClientApp:
    """The ClientApp an installed app declares.

    Raises:
        AppBundleError: the component is missing, fails to import, or is no ClientApp.
    """
    app = _component(app_dir, "clientapp")
    if not isinstance(app, ClientApp):
        raise AppBundleError(f"clientapp of {app_dir.name} is not a flwr ClientApp")
    return app


def load_server_app(app_dir: Path) -> ServerApp:
    """The ServerApp an installed app declares.

    Raises:
        AppBundleError: the component is missing, fails to import, or is no ServerApp.
    """
    app = _component(app_dir, "serverapp")
    if not isinstance(app, ServerApp):
        raise AppBundleError(f"serverapp of {app_dir.name} is not a flwr ServerApp")
    return app
