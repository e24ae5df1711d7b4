"""One catalog of model names over the fleet: aliases clients use (`models.aliases`) and catalog
entries that pool several nodes' names for one model (`models.<name>.names`).

Every name is compared normalised (corral.domain.names). A request's name resolves in two steps: an
alias to its target, then a member name to its catalog entry. Routing, limits and allow-lists then
work on that one key; each node is sent the name it knows the model by.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.domain.names import normalize


@dataclass(frozen=True, slots=True)
class Catalog:
    aliases: Mapping[str, str] = field(default_factory=dict)  # normalised alias -> catalog key
    members: Mapping[str, str] = field(default_factory=dict)  # normalised node-side name -> catalog key
    spelling: Mapping[str, str] = field(default_factory=dict)  # normalised alias or key -> as configured

    @classmethod
    def build(cls, aliases: Mapping[str, str], names: Mapping[str, Sequence[str]]) -> Catalog:
        """From `models.aliases` and each `models.<key>.names`. ValueError names a name given twice."""
        members: dict[str, str] = {}
        spelling: dict[str, str] = {}
        for key, others in names.items():
            k = normalize(key)
            spelling[k] = key
            for name in (key, *others):
                n = normalize(name)
                if members.get(n, k) != k:
                    raise ValueError(f"{name!r} is in the names of both {members[n]!r} and {k!r}")
                members[n] = k
        resolved: dict[str, str] = {}
        for alias, target in aliases.items():
            a = normalize(alias)
            if a in members:
                raise ValueError(f"alias {alias!r} is also a catalog name")
            t = normalize(target)
            if t in {normalize(x) for x in aliases}:
                raise ValueError(f"alias {alias!r} points at another alias, {target!r}: point it at a model")
            resolved[a] = members.get(t, t)
            spelling[a] = alias
        return cls(resolved, members, spelling)

    def __bool__(self) -> bool:
        return bool(self.aliases or self.members)

    def resolve(self, name: str) -> str:
        """The catalog key a client's name (normalised) stands for."""
        target = self.aliases.get(name, name)
        return self.members.get(target, target)

    def key_of(self, native: str) -> str:
        """The catalog key of a name a node lists (normalised)."""
        return self.members.get(native, native)

    def aliases_of(self, keys: Iterable[str]) -> list[tuple[str, str]]:
        """(alias, catalog key) for every alias whose target is among `keys`."""
        wanted = set(keys)
        return [(a, k) for a, k in self.aliases.items() if k in wanted]

    def display(self, name: str) -> str:
        """An alias or catalog key as the configuration spells it."""
        return self.spelling.get(name, name)
