"""``fednode fl launch`` refuses a bad job file as a usage error, before it contacts the node.

No node runs here: each refusal must happen in the operator's terminal, with
exit 2 and one line naming the file and the key, then a hint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.admin.client import _error_from
from node.admin.service import _public_kind
from node.cli.exit_codes import USAGE, code_for
from node.cli.main import main
from node.errors import FederatedError
from node.fl.errors import JobFileError
from protocols.fednode.v1 import admin_pb2
from tests.unit.fl.fl_fakes import APP

AGREEMENT = "agr-" + "0" * 31 + "1"


def _job(app: Path = APP, *, job: str = "", strategy: str = "min-nodes = 1") -> str:
    return (
        f'[job]\napp = "{app}"\nrounds = 2\noutput = "out"\n{job}\n'
        f"[strategy]\n{strategy}\n"
        f'[[participants]]\ndepartment = "traffic"\ndataset = "incidents"\n'
        f'agreement = "{AGREEMENT}"\n'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_job(job="secgg = true"), r"\[job\] has no key 'secgg'; did you mean 'secagg'\?"),
        (_job(job="secagg = 'yes'"), r"\[job\]\.secagg must be true or false"),
        (_job(strategy="min-nodes = 3"), r"\[strategy\]\.min-nodes = 3 is more than the job's 1"),
        (
            _job(strategy="min-node = 1"),
            r"\[strategy\]\.min-node: app fednode/traffic-risk has no run-config key "
            r"'min-node'; did you mean 'min-nodes'\?",
        ),
        (_job(APP.parent / "no-such-app"), r"\[job\]\.app names .*no-such-app, which does not"),
        (_job().replace("rounds = 2", "rounds = 0"), r"\[job\]\.rounds must be a positive"),
        ("[job\n", "is not valid TOML"),
        (None, "cannot read job file"),
    ],
    ids=["unknown-key", "bad-value", "min-nodes", "undeclared", "no-app", "rounds", "toml", "none"],
)
def test_a_bad_job_file_is_a_usage_error_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, expected: str
) -> None:
    job = tmp_path / "road-safety.toml"
    if text is not None:
        job.write_text(text)
    code = main(["fl", "launch", str(job), "--home", str(tmp_path / "no-node")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2, err
    assert len(err) == 2 and err[1].startswith("hint: "), err
    assert err[0].startswith("fednode: error: ") and str(job) in err[0], err
    assert re.search(expected, err[0]), err


def test_a_job_file_error_the_node_finds_is_a_usage_error_too() -> None:
    """The node reads the file again (it may have changed, or a script called the admin
    socket directly); its refusal crosses the socket as a usage error, not a failed job."""
    error = JobFileError("job.toml: [job] has no key 'secgg'", hint="did you mean 'secagg'?")
    assert isinstance(error, FederatedError)
    assert code_for(error) == USAGE
    kind = _public_kind(error)
    received = _error_from(admin_pb2.AdminFailure(kind=kind, message=str(error), hint="h"))
    assert code_for(received) == USAGE
