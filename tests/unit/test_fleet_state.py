"""The stored fleet state: the YAML is the base, stored overrides win, a removed node stays removed, and
the changes a process applies bring its fleet exactly to what the state describes (and only once)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet_state import FleetChanges, NodeOverride, WantedNode, applied, changes, wanted

NAMES = [f"n{i}" for i in range(5)]


def spec(name: str, port: int = 1) -> dict[str, object]:
    return {"name": name, "url": f"http://10.0.0.1:{port}"}


specs = st.builds(spec, st.sampled_from(NAMES), st.integers(1, 3))
overrides = st.builds(
    NodeOverride,
    name=st.sampled_from(NAMES),
    settings=st.one_of(st.none(), specs),
    removed=st.booleans(),
    draining=st.one_of(st.none(), st.booleans()),
).map(
    lambda o: o if o.settings is None else NodeOverride(o.name, {**o.settings, "name": o.name}, o.removed, o.draining)
)
bases = st.lists(st.sampled_from(NAMES), unique=True).map(lambda names: [spec(n) for n in names])
fleets = st.dictionaries(st.sampled_from(NAMES), st.tuples(st.integers(1, 3), st.booleans()), max_size=5).map(
    lambda d: {n: WantedNode(n, spec(n, port), draining) for n, (port, draining) in d.items()}
)


def test_yaml_alone_is_the_fleet() -> None:
    assert wanted([spec("a"), spec("b")], []) == {"a": WantedNode("a", spec("a")), "b": WantedNode("b", spec("b"))}


def test_stored_overrides_win_over_the_yaml() -> None:
    state = wanted(
        [spec("a"), spec("b"), spec("c")],
        [
            NodeOverride("a", draining=True),  # drained at run time
            NodeOverride("b", removed=True),  # removed at run time: stays removed though the YAML has it
            NodeOverride("c", spec("c", 9), draining=False),  # re-added with another URL
            NodeOverride("d", spec("d")),  # added at run time
            NodeOverride("gone", draining=True),  # drained, then dropped from the YAML: nothing to drain
        ],
    )
    assert state == {
        "a": WantedNode("a", spec("a"), True),
        "c": WantedNode("c", spec("c", 9)),
        "d": WantedNode("d", spec("d")),
    }
    assert list(state) == ["a", "c", "d"]  # the YAML's order, then run-time nodes by name


def test_changes_name_each_kind_of_difference() -> None:
    have = {
        "a": WantedNode("a", spec("a")),
        "b": WantedNode("b", spec("b"), True),
        "c": WantedNode("c", spec("c")),
        "x": WantedNode("x", spec("x")),
    }
    want = {
        "a": WantedNode("a", spec("a"), True),
        "b": WantedNode("b", spec("b")),
        "c": WantedNode("c", spec("c", 2), True),
        "d": WantedNode("d", spec("d")),
    }
    todo = changes(want, have)
    assert todo == FleetChanges(remove=("x",), add=(want["d"],), replace=(want["c"],), drain=("a", "c"), undrain=("b",))


@given(bases, st.lists(overrides, max_size=8), fleets)
def test_applying_the_changes_reaches_the_stored_state(
    base: list[dict[str, object]], stored: list[NodeOverride], have: dict[str, WantedNode]
) -> None:
    want = wanted(base, stored)
    after = applied(have, changes(want, have))
    assert after == want
    assert not changes(want, after), "a second sync with nothing new changes nothing"


@given(bases, st.lists(overrides, max_size=8))
def test_the_last_override_of_a_node_wins(base: list[dict[str, object]], stored: list[NodeOverride]) -> None:
    # The store keeps one row per node: the last write. Every process reading it agrees.
    last = {o.name: o for o in stored}
    want = wanted(base, last.values())
    for name, override in last.items():
        if override.removed:
            assert name not in want
        elif name in want:
            assert want[name].draining is bool(override.draining)


def test_a_new_yaml_keeps_the_stored_overrides_on_top() -> None:
    # FleetSync over the in-memory store (what Corral runs without a database), before it serves: no
    # node is contacted. A reload hands it the new YAML; run-time changes still win.
    import asyncio

    from corral.adapters.fleetstore import MemoryFleetStore
    from corral.app.build import make_breaker
    from corral.app.discovery import Discovery
    from corral.app.fleet import Fleet
    from corral.app.fleet_sync import FleetSync
    from corral.config import BackendSettings, HealthSettings

    def node(name: str, port: int = 1) -> BackendSettings:
        return BackendSettings(name=name, url=f"http://127.0.0.1:{port}")

    async def body() -> None:
        fleet = Fleet()
        sync = FleetSync(fleet, Discovery(fleet, 5.0), MemoryFleetStore(), [node("a"), node("b")], HealthSettings(),
                         make_breaker)  # fmt: skip
        await sync.sync()
        assert fleet.names() == ["a", "b"]
        await sync.remove("b", "ops")
        await sync.set_draining("a", True, "ops")
        changed = await sync.rebase([node("a", 2), node("b"), node("c")])
        assert fleet.names() == ["a", "c"]  # b stays removed; c is new
        assert [n.name for n in changed.replace] == ["a"] and fleet.get("a").draining  # type: ignore[union-attr]
        assert fleet.get("a").settings.port == 2  # type: ignore[union-attr]

    asyncio.run(body())
