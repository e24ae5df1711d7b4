"""The merged progress of a pull on several nodes (corral.domain.progress): what the ollama CLI draws
from it must be a sane bar per layer, and the last line must tell every failure."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.progress import ProgressMerger

NODES = ("a", "b", "c")
SIZES = {"sha256:aa": 1000, "sha256:bb": 37}


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[str, str, object]]:
    """Interleaved node streams: each node reports each layer's progress in steps, then ends."""
    events: list[tuple[str, str, object]] = []
    per_node = {}
    for node in NODES:
        steps: list[tuple[str, str, object]] = [(node, "status", "pulling manifest")]
        fail_at = draw(st.none() | st.integers(0, 6))
        for digest, size in SIZES.items():
            points = sorted(draw(st.lists(st.integers(0, size), min_size=1, max_size=4)))
            steps += [(node, digest, p) for p in points]
        steps.append((node, "status", "verifying sha256 digest"))
        if fail_at is not None and fail_at < len(steps):
            steps = [*steps[:fail_at], (node, "fail", "connection reset")]
        else:
            steps.append((node, "succeed", None))
        per_node[node] = steps
    while any(per_node.values()):
        node = draw(st.sampled_from([n for n, s in per_node.items() if s]))
        events.append(per_node[node].pop(0))
    return events


@settings(max_examples=300, deadline=None)
@given(runs())
def test_bars_never_move_back_keep_their_size_and_the_end_tells_every_failure(
    events: list[tuple[str, str, object]],
) -> None:
    merger = ProgressMerger(NODES)
    out = []
    for node, kind, value in events:
        if kind == "status":
            out += merger.feed(node, {"status": value})
        elif kind == "fail":
            out += merger.fail(node, str(value))
        elif kind == "succeed":
            out += merger.succeed(node)
        else:
            size = SIZES[kind]
            out += merger.feed(
                node, {"status": f"pulling {kind[7:19]}", "digest": kind, "total": size, "completed": value}
            )
    assert merger.finished
    seen: dict[str, list[tuple[int, int]]] = {}
    statuses = []
    for frame in out:
        if "digest" in frame:
            seen.setdefault(frame["digest"], []).append((frame.get("total", 0), frame.get("completed", 0)))
        else:
            statuses.append(frame["status"])
    for digest, points in seen.items():
        assert {t for t, _ in points} == {SIZES[digest] * len(NODES)}  # the CLI fixes a bar's size at its first line
        done = [c for _, c in points]
        assert done == sorted(done) and done[-1] <= SIZES[digest] * len(NODES)
        assert done[-1] == SIZES[digest] * len(NODES)  # every node ended: the bar is full
    assert len(statuses) == len(set(statuses)) and "success" not in statuses
    final = merger.outcome()
    failed = [n for n in NODES if n in merger.failures]
    if not failed:
        assert final == {"status": "success"}
    elif len(failed) == len(NODES):
        assert final == {"error": "connection reset"}  # all alike: answered as one Ollama would
    else:
        assert all(f"node{'s' if len(failed) > 1 else ''}" in final["error"] and n in final["error"] for n in failed)


def test_one_failing_node_is_named_and_the_others_finish() -> None:
    merger = ProgressMerger(NODES)
    frame = {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:aa", "total": 1000, "completed": 500}
    assert merger.feed("a", frame) == [
        {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:aa", "total": 3000, "completed": 500}
    ]
    merger.fail("b", "pull model manifest: file does not exist")
    merger.succeed("a")
    assert not merger.finished
    merger.succeed("c")
    assert merger.outcome() == {"error": "the pull failed on node b: pull model manifest: file does not exist"}


def test_a_status_is_passed_on_once_every_running_node_reached_it() -> None:
    merger = ProgressMerger(("a", "b"))
    assert merger.feed("a", {"status": "pulling manifest"}) == []
    assert merger.feed("b", {"status": "pulling manifest"}) == [{"status": "pulling manifest"}]
    assert merger.feed("a", {"status": "writing manifest"}) == []
    assert merger.fail("b", "boom") == [{"status": "writing manifest"}]  # only a is still running
    assert merger.feed("a", {"status": "success"}) == []  # success comes only from outcome()
