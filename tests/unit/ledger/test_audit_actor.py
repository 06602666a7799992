"""The local actor the admin service marks: scoped to its block and its thread."""

from __future__ import annotations

import threading

from node.audit.actor import acting_as, current_actor


def test_the_actor_holds_inside_the_block_only() -> None:
    assert current_actor() is None
    with acting_as("operator"):
        assert current_actor() == "operator"
        with acting_as("someone-else"):
            assert current_actor() == "someone-else"
        assert current_actor() == "operator"
    assert current_actor() is None


def test_another_thread_does_not_inherit_the_actor() -> None:
    # A request served on another thread (a peer's call) must not be recorded as
    # the operator's just because a command runs at the same time.
    seen: list[str | None] = []
    with acting_as("operator"):
        thread = threading.Thread(target=lambda: seen.append(current_actor()))
        thread.start()
        thread.join(timeout=5)
    assert seen == [None]
