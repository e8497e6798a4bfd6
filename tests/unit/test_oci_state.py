"""Container state: the status rules for every status, and the on-disk store."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from cocoon.errors import (
    ConfigError,
    ContainerExistsError,
    ContainerNotFoundError,
    ContainerStateError,
)
from cocoon.oci.state import ContainerState, StateStore, Status, validate_id

# every operation, and the statuses in which it is allowed (runc's rules)
ALLOWED = {
    "start": {Status.CREATED},
    "kill": {Status.CREATED, Status.RUNNING, Status.PAUSED},
    "delete": {Status.STOPPED, Status.CREATING},
    "pause": {Status.RUNNING},
    "resume": {Status.PAUSED},
    "exec": {Status.CREATED, Status.RUNNING},
    "update": {Status.CREATED, Status.RUNNING, Status.PAUSED},
}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("operation", sorted(ALLOWED))
def test_every_transition_rule(status: Status, operation: str) -> None:
    check = getattr(status, f"can_{operation}")
    assert check() == (status in ALLOWED[operation])


@pytest.mark.parametrize("status", list(Status))
def test_forced_delete_is_allowed_in_every_status(status: Status) -> None:
    assert status.can_delete(force=True)


def _state(cid: str = "c1", **kw: object) -> ContainerState:
    return ContainerState(id=cid, bundle="/b", rootfs="/b/rootfs", **kw)  # type: ignore[arg-type]


def test_store_round_trip_and_oci_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = _state(created="2026-01-01T00:00:00Z", annotations={"a": "b"})
    with store.creating(state):
        loaded = store.load("c1")
        assert loaded == state
        oci = loaded.oci_state()
        assert oci["id"] == "c1" and oci["bundle"] == "/b" and oci["annotations"] == {"a": "b"}
        assert oci["status"] == "creating" and oci["ociVersion"].startswith("1.")
    assert store.list() == ["c1"]


def test_status_follows_the_host_process(tmp_path: Path) -> None:
    state = _state(status=Status.RUNNING, pid=os.getpid())
    assert state.current_status() is Status.RUNNING
    assert state.oci_state()["pid"] == os.getpid()
    dead = _state(status=Status.RUNNING, pid=2**22 + 12345)
    assert dead.current_status() is Status.STOPPED
    assert dead.oci_state()["pid"] == 0
    reused = _state(status=Status.RUNNING, pid=os.getpid(), pid_start=1)
    assert reused.current_status() is Status.STOPPED  # same pid, another process


def test_ids_in_use_and_unknown_ids(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.create(_state())
    with pytest.raises(ContainerExistsError, match="c1 already exists"):
        store.create(_state())
    with pytest.raises(ContainerNotFoundError, match="nope does not exist"):
        store.load("nope")
    with pytest.raises(ContainerNotFoundError), store.lock("nope"):
        pass


# "c1\n": a regression, the pattern's $ let a trailing newline through
@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "-x", "a b", "x" * 2000, "c1\n"])
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid container id"):
        validate_id(bad)


def test_an_id_longer_than_a_file_name_is_refused_in_one_line(tmp_path: Path) -> None:
    assert validate_id("x" * 255) == "x" * 255
    store = StateStore(tmp_path)
    for call in (validate_id, store.load, store.exists, store.dir):
        with pytest.raises(ConfigError, match=r"\(256 characters\): at most 255") as caught:
            call("x" * 256)
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_save_is_atomic(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = _state()
    store.create(state)
    stop = threading.Event()
    seen_bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            text = (tmp_path / "c1" / "state.json").read_text()
            try:
                json.loads(text)
            except ValueError:
                seen_bad.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            state.annotations = {"n": str(i) * (i % 50)}
            store.save(state)
    finally:
        stop.set()
        thread.join()
    assert not seen_bad
    assert not [p for p in (tmp_path / "c1").iterdir() if p.name.startswith(".state")]


def test_lock_serialises_holders(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.create(_state())
    order: list[str] = []

    def second() -> None:
        with store.lock("c1"):
            order.append("second")

    with store.lock("c1"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


def test_a_lock_waiter_whose_directory_went_is_told_it_is_gone(tmp_path: Path) -> None:
    """The id lock race: a waiter holds the lock of a directory a `delete` removed (and a new
    `create` of the same id made again) meanwhile; it must not go on as if it held the id."""
    store = StateStore(tmp_path)
    store.create(_state())
    outcome: list[str] = []

    def waiter() -> None:
        try:
            with store.lock("c1"):
                outcome.append("went on")
        except ContainerNotFoundError as err:
            outcome.append(str(err))

    with store.lock("c1"):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)  # the waiter has opened the old lock file and waits on it
        store.remove("c1")
        store.create(_state())  # the id again, by another create
    thread.join()
    assert outcome == ["container c1 does not exist (it was removed meanwhile)"]
    with store.lock("c1"):  # the new directory's lock is a lock as any other
        pass


def test_a_create_holds_the_id_from_its_first_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    order: list[str] = []

    def other() -> None:
        with store.lock("c1"):
            order.append("other")

    with store.creating(_state()):
        assert store.load("c1").status is Status.CREATING  # its create is running
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.2)
        order.append("create")
    thread.join()
    assert order == ["create", "other"]


def test_a_create_that_died_is_stopped_not_creating(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.create(_state())  # its lock let go, as a killed create's is
    assert store.load("c1").status is Status.STOPPED
    assert store.load("c1").oci_state()["status"] == "stopped"
    assert store.load("c1").status.can_delete()


def test_a_half_made_id_removed_before_its_create_locks_it(tmp_path: Path) -> None:
    """`delete --force` of a half-made id (directory, no state) in the moment between the
    create's mkdir and its lock: the create is told in one line, and nothing is left."""
    store = StateStore(tmp_path)
    original = StateStore.lock

    def removed_first(self: StateStore, container_id: str):  # type: ignore[no-untyped-def]
        store.remove(container_id)  # what the delete did in that moment
        return original(self, container_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StateStore, "lock", removed_first)
        with pytest.raises(ContainerStateError, match="c1 was removed while it was being "
                                                      "created"), store.creating(_state()):
            pass
    assert not (tmp_path / "c1").exists()
