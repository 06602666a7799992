"""Node configuration: one TOML file in the node's home directory.

The home directory holds everything a department's node owns::

    <home>/node.toml          this file
    <home>/keys/tls.key       ECDSA P-256 key for the mTLS certificate (0600)
    <home>/keys/signing.key   Ed25519 key for checkpoints, envelopes, receipts, agreements (0600)
    <home>/keys/hpke.key      ML-KEM-768 + X25519 key for receiving encrypted shares (0600)
    <home>/tls/node.pem       the certificate the federation authority issued
    <home>/tls/node.csr.pem   the certificate request sent to the authority
    <home>/request.json       the signed enrolment request (public keys, endpoint)
    <home>/ca.pem             the federation authority's certificate
    <home>/directory.json     the current signed federation directory
    <home>/ledger/            the audit ledger
    <home>/data/              catalog, agreements, received shares, federated jobs
    <home>/admin.sock         the operator socket (mode 0600), present while the node runs

Relative paths in the file are resolved against the home directory, so a
home can be moved or restored from backup as one folder.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "FlSettings",
    "NodeConfig",
    "default_home",
    "load_config",
    "render_config",
]

DEFAULT_PORT = 7443
CONFIG_FILE = "node.toml"


def default_home() -> Path:
    """The home used when ``--home`` is not given: ``$FEDNODE_HOME`` or ``./.fednode``."""
    return Path(os.environ.get("FEDNODE_HOME", ".fednode")).resolve()


@dataclass(frozen=True)
class FlSettings:
    """What this node requires of a federated job it takes part in (``[fl]``).

    The defaults require nothing: the coordinator's choices stand.
    """

    #: Refuse a job that does not use secure aggregation.
    require_secagg: bool = False
    #: Refuse a job that does not apply differential privacy to its updates.
    require_dp: bool = False
    #: Refuse a job whose DP gives a clipped update a larger (effective) epsilon.
    max_epsilon: float | None = None
    #: Refuse a run-config number more than this many times the approved app's
    #: positive default in size (see node/fl/policy.py).
    max_run_config_factor: float = 10.0


@dataclass(frozen=True)
class NodeConfig:
    """A node's settings, with every path already resolved."""

    home: Path
    federation: str
    department: str
    display_name: str
    listen: str
    endpoint: str
    rpc_timeout_seconds: float
    data_dir: Path
    ledger_dir: Path
    log_level: str
    fl: FlSettings = field(default_factory=FlSettings)

    @property
    def admin_socket(self) -> Path:
        return self.home / "admin.sock"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def tls_key_path(self) -> Path:
        return self.keys_dir / "tls.key"

    @property
    def signing_key_path(self) -> Path:
        return self.keys_dir / "signing.key"

    @property
    def hpke_key_path(self) -> Path:
        return self.keys_dir / "hpke.key"

    @property
    def cert_path(self) -> Path:
        return self.home / "tls" / "node.pem"

    @property
    def csr_path(self) -> Path:
        return self.home / "tls" / "node.csr.pem"

    @property
    def request_path(self) -> Path:
        return self.home / "request.json"

    @property
    def ca_cert_path(self) -> Path:
        return self.home / "ca.pem"

    @property
    def directory_path(self) -> Path:
        return self.home / "directory.json"

    @property
    def directory_state_path(self) -> Path:
        # Highest directory serial ever accepted, so a restart cannot be rolled back.
        return self.home / "directory.serial"

    @property
    def pid_path(self) -> Path:
        return self.home / "node.pid"


def render_config(
    *,
    federation: str,
    department: str,
    display_name: str,
    listen: str,
    endpoint: str,
) -> str:
    """The text of a fresh ``node.toml`` with documented defaults."""
    return f"""\
# fednode node configuration. Relative paths resolve against this file's folder.

[node]
federation = "{federation}"
department = "{department}"
display_name = "{display_name}"

[network]
# Address the mTLS gRPC port binds to.
listen = "{listen}"
# Address peers use to reach this node; published in the federation directory.
endpoint = "{endpoint}"
# Deadline for every outgoing RPC, in seconds.
rpc_timeout_seconds = 30

[paths]
data_dir = "data"
ledger_dir = "ledger"

[logging]
# One of DEBUG, INFO, WARNING, ERROR. Logs are JSON lines on stderr.
level = "INFO"

[fl]
# What a federated job must use before this node trains on its data.
require_secagg = false
require_dp = false
# Largest effective DP epsilon accepted (uncomment to set):
# max_epsilon = 8.0
# A run-config number may be at most this many times the approved app's default:
max_run_config_factor = 10
"""


def _get(table: dict[str, object], key: str, kind: type, where: str) -> object:
    if key not in table:
        raise ConfigError(
            f"{where}: missing key '{key}'", hint="compare with 'fednode init' output"
        )
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _table(doc: dict[str, object], name: str, path: Path) -> dict[str, object]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return table


_FL_KEYS = ("require_secagg", "require_dp", "max_epsilon", "max_run_config_factor")


def _fl_settings(table: dict[str, object], where: str) -> FlSettings:
    """Parse ``[fl]``; every key is optional, and a key it does not know is refused.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, a
            ``max_epsilon`` that is not a finite number above zero, or a
            ``max_run_config_factor`` that is not a finite number of at least 1.
    """
    unknown = sorted(set(table) - set(_FL_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: [fl] has no key {unknown[0]!r}",
            hint=f"[fl] knows: {', '.join(_FL_KEYS)}",
        )
    flags = {
        key: _get(table, key, bool, f"{where}: [fl]") if key in table else False
        for key in ("require_secagg", "require_dp")
    }
    max_epsilon: float | None = None
    if "max_epsilon" in table:
        max_epsilon = float(_get(table, "max_epsilon", float, f"{where}: [fl]"))  # type: ignore[arg-type]
        if not (math.isfinite(max_epsilon) and max_epsilon > 0):
            raise ConfigError(
                f"{where}: [fl] 'max_epsilon' must be a finite number above 0, got {max_epsilon!r}",
                hint="leave it out to accept any epsilon, or give e.g. max_epsilon = 8.0",
            )
    factor = FlSettings.max_run_config_factor
    if "max_run_config_factor" in table:
        factor = float(_get(table, "max_run_config_factor", float, f"{where}: [fl]"))  # type: ignore[arg-type]
        if not (math.isfinite(factor) and factor >= 1):
            raise ConfigError(
                f"{where}: [fl] 'max_run_config_factor' must be a finite number of at least 1, "
                f"got {factor!r}",
                hint="leave it out for 10, or give e.g. max_run_config_factor = 20",
            )
    return FlSettings(
        require_secagg=bool(flags["require_secagg"]),
        require_dp=bool(flags["require_dp"]),
        max_epsilon=max_epsilon,
        max_run_config_factor=factor,
    )


def load_config(home: Path) -> NodeConfig:
    """Read ``<home>/node.toml``.

    Raises:
        ConfigError: the file is missing, is not TOML, lacks a required key,
            or has an invalid ``[fl]`` section.
    """
    path = home / CONFIG_FILE
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(
            f"no node configuration at {path}",
            hint="run 'fednode init --department ID' first, or pass --home",
        ) from e
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    node = _table(doc, "node", path)
    network = _table(doc, "network", path)
    paths = _table(doc, "paths", path)
    logging_ = _table(doc, "logging", path)
    where = str(path)
    fl = _fl_settings(_table(doc, "fl", path), where)
    return NodeConfig(
        home=home,
        federation=str(_get(node, "federation", str, where)),
        department=str(_get(node, "department", str, where)),
        display_name=str(node.get("display_name", node.get("department"))),
        listen=str(_get(network, "listen", str, where)),
        endpoint=str(_get(network, "endpoint", str, where)),
        rpc_timeout_seconds=float(network.get("rpc_timeout_seconds", 30)),  # type: ignore[arg-type]
        data_dir=home / str(paths.get("data_dir", "data")),
        ledger_dir=home / str(paths.get("ledger_dir", "ledger")),
        log_level=str(logging_.get("level", "INFO")).upper(),
        fl=fl,
    )
