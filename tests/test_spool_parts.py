"""Records settled per lane: a trace that goes to several destinations is sent again after a
restart only to those not yet done with it."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import pytest
from exporters import settings_for, trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinium_logging.admission import Admission
from infinium_logging.cli import main
from infinium_logging.collector import LocalCollector
from infinium_logging.destination_infinium import encode_trace
from infinium_logging.durability import INFINIUM_LANE, replay_spool
from infinium_logging.ledger import Ledger
from infinium_logging.queued import Item
from infinium_logging.redact import Redactor
from infinium_logging.results import Reporter
from infinium_logging.retry import RetryPolicy
from infinium_logging.spool import RecordRef, Spool, lane_tag, survey
from infinium_logging.spool_files import _read_acks
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET
from infinium_logging.writeahead import WriteAhead

AGENT = "7b3e1f0a-2c4d-4e5f-8a9b-0c1d2e3f4a5b"
A = lane_tag("infinium")
B = lane_tag("infino")
BOTH = frozenset({A, B})


def segment_files(root: Path, suffix: str) -> list[Path]:
    return sorted((root / AGENT).glob(f"*{suffix}"))


def ack_entries(root: Path) -> list[int]:
    """Every entry of the agent's one ``.ack`` file, as the 8-byte integers on disk."""
    (path,) = segment_files(root, ".ack")
    raw = path.read_bytes()
    return [entry for (entry,) in struct.iter_unpack(">Q", raw)]


def test_lane_tag_is_a_byte_other_than_zero() -> None:
    """A lane's tag is stable, never 0 (the whole-record entry), and distinguishes our lanes."""
    assert lane_tag("infinium") == 1 + zlib.crc32(b"infinium") % 255
    assert all(1 <= lane_tag(name) <= 255 for name in ("", "infinium", "infino", "x" * 99))
    assert A != B


def test_ack_file_round_trip_whole_and_part_entries(tmp_path: Path) -> None:
    """One file holding whole entries and part entries reads back as both; parts of a record
    also settled whole are not reported, and a torn last entry is ignored."""
    path = tmp_path / "seg.ack"
    entries = [0, 4096, (A << 56) | 100, (B << 56) | 100, (A << 56) | 4096, (B << 56) | 7]
    path.write_bytes(b"".join(struct.pack(">Q", e) for e in entries) + b"\x00\x01")
    settled, parts = _read_acks(str(path))
    assert settled == {0, 4096}
    assert parts == {100: frozenset({A, B}), 7: frozenset({B})}


def test_an_old_style_ack_file_reads_unchanged(tmp_path: Path) -> None:
    """A file of plain offsets (what every earlier version wrote) is all whole entries."""
    path = tmp_path / "seg.ack"
    path.write_bytes(b"".join(struct.pack(">Q", offset) for offset in (0, 30, 61)))
    assert _read_acks(str(path)) == ({0, 30, 61}, {})
    assert _read_acks(str(tmp_path / "missing.ack")) == (set(), {})


def test_one_lane_done_leaves_the_record_pending_both_settle_it(tmp_path: Path) -> None:
    """After one of two lanes the record stays pending (one part entry on disk, survey counts
    it); after the other it is settled, and its segment removed once nothing else is live."""
    spool = Spool(str(tmp_path), AGENT)
    ref = spool.append(b"trace")
    spool.ack_part(ref, A, BOTH)
    assert spool.parts(ref) == {A}
    assert spool.holds(ref)
    assert spool.stats().pending_records == 1
    assert ack_entries(tmp_path) == [(A << 56) | ref.offset]
    (found,) = survey(str(tmp_path))
    assert found.records == 1  # a part entry settles nothing
    spool.ack_part(ref, B, BOTH)
    assert not spool.holds(ref)
    assert spool.parts(ref) == frozenset()
    assert spool.stats().pending_records == 0
    spool.append(b"the next one")  # the active segment stays while written to
    spool.close()
    second = Spool(str(tmp_path), AGENT)
    assert [payload for _, _, payload in second.take_backlog(10)] == [b"the next one"]
    second.close()


def test_settled_segment_is_removed_after_the_last_lane(tmp_path: Path) -> None:
    """A sealed segment whose last record the last lane settles goes away, files and all."""
    spool = Spool(str(tmp_path), AGENT, segment_bytes=64 * 1024)
    refs = [spool.append(b"x" * 20_000) for _ in range(4)]  # the first segment fills up
    first = [ref for ref in refs if ref.segment == refs[0].segment]
    assert len(first) < len(refs)
    for ref in first:
        spool.ack_part(ref, B, BOTH)
    assert os.path.exists(first[0].segment)
    for ref in first:
        spool.ack_part(ref, A, BOTH)
    assert not os.path.exists(first[0].segment)
    assert not os.path.exists(first[0].segment[: -len(".log")] + ".ack")
    spool.close()


def test_a_part_ack_given_twice_writes_one_entry(tmp_path: Path) -> None:
    """A lane done twice with a record is recorded once; one that settles nothing pending
    (an unknown or settled record) is ignored."""
    spool = Spool(str(tmp_path), AGENT)
    ref = spool.append(b"trace")
    other = spool.append(b"other")
    spool.ack_part(ref, B, BOTH)
    spool.ack_part(ref, B, BOTH)
    spool.ack(other)
    spool.ack_part(other, B, BOTH)
    spool.ack_part(RecordRef(ref.segment, 999_999, 10), B, BOTH)
    assert ack_entries(tmp_path) == [(B << 56) | ref.offset, other.offset]
    assert spool.parts(other) == frozenset()
    spool.close()


def test_a_part_ack_after_close_is_left_on_disk(tmp_path: Path) -> None:
    """After close, a part ack changes nothing: the record stays pending for the next start."""
    spool = Spool(str(tmp_path), AGENT)
    ref = spool.append(b"trace")
    spool.close()
    spool.ack_part(ref, A, frozenset({A}))
    assert spool.holds(ref)
    assert ack_entries(tmp_path) == []


def test_a_part_ack_from_inside_the_spool_is_done_when_the_call_ends(tmp_path: Path) -> None:
    """Called on a thread already inside the spool (a signal handler, a finalizer), a part
    ack does not wait on the lock: it is done as soon as the call under way ends."""
    spool = Spool(str(tmp_path), AGENT)
    ref = spool.append(b"trace")
    with spool._lock:  # as a call under way on this thread holds it
        spool.ack_part(ref, A, BOTH)
        assert ack_entries(tmp_path) == []
    spool.append(b"the call that ends it")
    assert spool.parts(ref) == {A}
    assert ack_entries(tmp_path) == [(A << 56) | ref.offset]
    spool.close()


def test_adoption_carries_the_parts_and_takes_the_next_ones(tmp_path: Path) -> None:
    """Another process adopting a dead one's segment knows which lanes were done with each
    record; its own part acks go to that segment's ack file, and the last one settles it."""
    dead = Spool(str(tmp_path), AGENT)
    refs = [dead.append(f"trace-{i}".encode()) for i in range(3)]
    dead.ack_part(refs[0], B, BOTH)
    dead.ack_part(refs[1], A, BOTH)
    dead.close()  # its locks go, as a killed process's do
    survivor = Spool(str(tmp_path), AGENT)
    taken = survivor.take_backlog(10)
    assert [(payload, survivor.parts(ref)) for ref, _, payload in taken] == [
        (b"trace-0", frozenset({B})),
        (b"trace-1", frozenset({A})),
        (b"trace-2", frozenset()),
    ]
    adopted = [ref for ref, _, _ in taken]
    survivor.ack_part(adopted[0], A, BOTH)
    survivor.ack_part(adopted[2], B, BOTH)
    assert survivor.stats().pending_records == 2
    survivor.close()
    third = Spool(str(tmp_path), AGENT)
    again = third.take_backlog(10)
    assert [(payload, third.parts(ref)) for ref, _, payload in again] == [
        (b"trace-1", frozenset({A})),
        (b"trace-2", frozenset({B})),
    ]
    third.close()


def write_ahead(collector: LocalCollector, tmp_path: Path) -> tuple[WriteAhead, Ledger]:
    """A WriteAhead as an exporter makes one, with a ledger of its own."""
    config = settings_for(collector, tmp_path)
    ahead = WriteAhead(
        config,
        RetryPolicy.from_settings(config),
        lambda: False,
        str,
        Redactor.from_settings(config),
    )
    ledger = Ledger(threading.RLock())
    ahead.reset(Admission(ledger, 100, 1 << 24), lambda count: None, Reporter(None))
    return ahead, ledger


def test_take_up_tells_the_item_its_done_lanes(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """A record taken up from the spool into the queue carries the lanes done with it."""
    dead = Spool(str(tmp_path), TEST_AGENT_ID)
    done = dead.append(encode_trace(trace("stored by Infino")))
    dead.append(encode_trace(trace("stored nowhere")))
    dead.ack_part(done, B, BOTH)
    dead.close()
    ahead, ledger = write_ahead(infinium_collector, tmp_path)
    spool = ahead.open()
    assert spool is not None
    assert spool.adopt() == 2
    ahead.do_chore("refill")
    assert [item.done for item in ledger.queue] == [{B}, frozenset()]
    spool.close()


def test_write_ahead_lanes_settle_a_record_once_every_lane_is_done(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """With lanes set, ack() settles the primary lane's part of a trace handed to the lanes
    and ack_lane() another's; the record is settled once both are done.  Without lanes, or
    for a trace settled before any lane had it, ack() settles it whole."""
    ahead, _ = write_ahead(infinium_collector, tmp_path)
    ref, _, _ = ahead.write(trace("two lanes"))
    plain, _, _ = ahead.write(trace("one lane"))
    spool = ahead.spool
    assert spool is not None and ref is not None and plain is not None
    ahead.ack(Item(None, 0, 1, None, plain))
    assert not spool.holds(plain)
    ahead.set_lanes(A, BOTH)
    unhanded, _, _ = ahead.write(trace("invalid before any lane had it"))
    assert unhanded is not None
    ahead.ack(Item(None, 0, 1, None, unhanded))  # not handed to the lanes: settled whole
    assert not spool.holds(unhanded)
    ahead.ack(Item(None, 0, 1, None, ref, handed=True))
    assert spool.parts(ref) == {A}
    ahead.ack_lane(ref, B)
    assert not spool.holds(ref)
    ahead.ack_lane(None, B)  # a trace without a record: nothing to do
    spool.close()


def test_replay_leaves_what_infinium_stored_already(
    infinium_collector: LocalCollector,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """replay does not send a record Infinium stored already again, leaves it in the spool
    for the other destination, counts it, and the command says so."""
    dead = Spool(str(tmp_path), TEST_AGENT_ID)
    stored = dead.append(encode_trace(trace("stored by Infinium")))
    elsewhere = dead.append(encode_trace(trace("stored by Infino")))
    dead.append(encode_trace(trace("stored nowhere")))
    dead.ack_part(stored, INFINIUM_LANE, BOTH)
    dead.ack_part(elsewhere, B, BOTH)
    dead.close()
    report = replay_spool(settings_for(infinium_collector, tmp_path))
    assert (report.found, report.sent, report.left, report.failed) == (3, 2, 1, 0)
    assert sorted(t.task.name for t in infinium_collector.traces()) == [
        "stored by Infino",
        "stored nowhere",
    ]
    (pending,) = survey(str(tmp_path))
    assert pending.records == 1
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    flags = ["--base-url", infinium_collector.base_url, "--agent-id", TEST_AGENT_ID]
    assert main(["replay", "--spool-dir", str(tmp_path), *flags]) == 0
    out = capsys.readouterr().out
    assert "1 already stored by Infinium were not sent again" in out
    assert len(infinium_collector.traces()) == 2
    after = Spool(str(tmp_path), TEST_AGENT_ID)
    ((ref, _, _),) = after.take_backlog(10)
    assert after.parts(ref) == {INFINIUM_LANE}
    after.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    acks=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([1, 2, 3])), max_size=20),
    reopen=st.integers(0, 20),
)
def test_any_interleaving_settles_exactly_the_covered_records(
    tmp_path_factory: pytest.TempPathFactory, acks: list[tuple[int, int]], reopen: int
) -> None:
    """Part acks over four records and three lanes, in any order, with the spool re-read from
    its files partway: exactly the records all three lanes are done with end up settled, and
    the others know their lanes."""
    root = tmp_path_factory.mktemp("parts")
    needed = frozenset({1, 2, 3})
    spool = Spool(str(root), AGENT)
    refs = [spool.append(b"record %d" % i) for i in range(4)]
    spool.append(b"keeps the segment")
    done: list[set[int]] = [set() for _ in refs]
    for step, (index, tag) in enumerate(acks):
        if step == reopen:
            spool.close()
            spool = Spool(str(root), AGENT)  # adopts the segment: same paths and offsets
        spool.ack_part(refs[index], tag, needed)
        done[index].add(tag)
    spool.close()
    final = Spool(str(root), AGENT)
    left = {ref.offset: final.parts(ref) for ref, _, _ in final.take_backlog(10)}
    final.close()
    expected = {ref.offset: frozenset(d) for ref, d in zip(refs, done, strict=True) if d != needed}
    expected[max(left)] = frozenset()  # the record that keeps the segment
    assert left == expected
