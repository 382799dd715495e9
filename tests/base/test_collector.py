"""The cycle collector is kept off what exists during a build, and only then."""

from __future__ import annotations

import gc
import weakref

import pytest

from server.base.collector import FROZEN_BUILDS_IN_A_ROW, collector_kept_off


class Node:
    """An object that can sit in a reference cycle (only the collector frees those)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first, weakref.ref(first)


@pytest.mark.parametrize("first_build", [True, False])
def test_what_exists_is_frozen_in_the_block_and_nothing_after(first_build: bool) -> None:
    gc.collect()
    tracked_before = len(gc.get_objects())
    with collector_kept_off(first_build=first_build) as between_files:
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start >= tracked_before
        made_inside = [Node() for _ in range(100)]
        between_files()
        frozen_after_a_file = gc.get_freeze_count()
    assert gc.get_freeze_count() == 0
    if first_build:
        # A cold build freezes what it made so far before each file...
        assert frozen_after_a_file >= frozen_at_start + len(made_inside)
    else:
        # ...a later one leaves what it makes to the collector's usual accounting.
        assert frozen_after_a_file == frozen_at_start


def test_a_cycle_made_and_dropped_in_a_first_build_is_collected_at_its_end() -> None:
    """What a cold build froze skipped the collector's accounting: its end walks it once."""
    with collector_kept_off(first_build=True) as between_files:
        held, alive = cycle()
        between_files()
        del held
        gc.collect()
        assert alive() is not None  # frozen: not the collector's yet
    assert alive() is None  # collected as the block ended, with nothing asked


def test_a_cycle_that_became_garbage_in_a_later_build_is_collected_after_it() -> None:
    held, alive = cycle()
    with collector_kept_off(first_build=False):
        del held
        gc.collect()  # the frozen cycle is not the collector's yet
        assert alive() is not None
    gc.collect()
    assert alive() is None  # unfrozen: nothing is leaked by having been frozen


@pytest.mark.parametrize("first_build", [True, False])
def test_nothing_stays_frozen_when_the_block_raises(first_build: bool) -> None:
    with (
        pytest.raises(RuntimeError, match="build failed"),
        collector_kept_off(first_build=first_build),
    ):
        raise RuntimeError("build failed")
    assert gc.get_freeze_count() == 0


def test_after_frozen_builds_in_a_row_without_a_full_collection_one_runs_unfrozen() -> None:
    """Garbage among frozen objects needs a full collection with nothing frozen; a replica
    that only rebuilds might never have one, so every so often a build runs unfrozen."""
    with collector_kept_off(first_build=False):
        pass  # the collector is watched from the first build on
    gc.collect()  # a full collection with nothing frozen: the count starts again
    for _ in range(FROZEN_BUILDS_IN_A_ROW):
        with collector_kept_off(first_build=False):
            assert gc.get_freeze_count() > 0
            gc.collect()  # walks only what is not frozen: does not count
    with collector_kept_off(first_build=False) as between_files:
        assert gc.get_freeze_count() == 0
        between_files()
        assert gc.get_freeze_count() == 0
    held, alive = cycle()
    del held
    with collector_kept_off(first_build=False):
        assert gc.get_freeze_count() == 0  # still none since: unfrozen again
        gc.collect()  # nothing frozen: this one walks everything...
    assert alive() is None
    with collector_kept_off(first_build=False):
        assert gc.get_freeze_count() > 0  # ...so the next build freezes again
