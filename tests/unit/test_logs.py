"""Node logs are JSON lines only, Flower's records included.

Each case runs in a child process, since logging is configured process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
from node.logs import configure_logging
if sys.argv[1] == "flower-first":
    import flwr.common.logger
configure_logging("INFO", department="health")
import node.fl  # imports Flower, which installs its own console handler
logging.getLogger("flwr").info("round %d done", 3)
logging.getLogger("flwr").debug("not at INFO")
logging.getLogger("fednode.test").info("node line")
"""


@pytest.mark.parametrize("order", ["flower-first", "logging-first"])
def test_flower_records_become_json_lines_once(order: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, order],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    flower = [line for line in lines if line["logger"] == "flwr"]
    assert [line["msg"] for line in flower] == ["round 3 done"]
    assert flower[0]["department"] == "health"
    assert any(line["msg"] == "node line" for line in lines)
