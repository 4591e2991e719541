"""Who may write into which project: credentials and domains to project ids.

Built once from the settings and then only read, so lookups are plain dict
hits on the request path. Secret keys (server keys, Vero tokens, vtcdn keys)
are configured as ``sha256:<hex>`` and compared by the hash of what the client
presents; the clear value never needs to be stored. Every index maps to
exactly one project, so a key of one project can never write into another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from eventsieve.config import ProjectSettings

_HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """The stored form of a secret key: ``sha256:`` + hex digest of its UTF-8 bytes."""
    return _HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def sanitize_hostname(host: str) -> str:
    """Host as sites are matched: trimmed, lower-case, without ``www.`` (as Plausible does)."""
    host = host.strip().lower().rstrip(".")
    return host.removeprefix("www.")


def _index(pairs: Iterable[tuple[str, str]]) -> Mapping[str, str]:
    index: dict[str, str] = {}
    for credential, project_id in pairs:
        owner = index.setdefault(credential, project_id)
        if owner != project_id:
            # The same secret in two projects would let one project write into
            # the other: refuse the configuration rather than pick one.
            raise ValueError(f"a credential is configured for both {owner!r} and {project_id!r}")
    return MappingProxyType(index)


@dataclass(frozen=True, slots=True)
class ProjectDirectory:
    """Read-only indexes from each kind of credential to the owning project id."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    server_keys: Mapping[str, str] = field(default_factory=dict)
    vero_tokens: Mapping[str, str] = field(default_factory=dict)
    vtcdn_keys: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_projects(cls, projects: Iterable[ProjectSettings]) -> ProjectDirectory:
        """Index the configured projects; raise ValueError if a credential is shared."""
        projects = tuple(projects)
        return cls(
            tokens=_index((t, p.id) for p in projects for t in p.tokens),
            server_keys=_index((k, p.id) for p in projects for k in p.server_keys),
            vero_tokens=_index((k, p.id) for p in projects for k in p.vero_tokens),
            vtcdn_keys=_index((k, p.id) for p in projects for k in p.vtcdn_keys),
            domains=_index((sanitize_hostname(d), p.id) for p in projects for d in p.domains),
        )

    def by_token(self, token: str | None) -> str | None:
        """Project of a public ingest token."""
        return self.tokens.get(token) if token else None

    def by_server_key(self, key: str | None) -> str | None:
        """Project of a secret server key (compared by hash)."""
        return self.server_keys.get(hash_key(key)) if key else None

    def by_vero_token(self, token: str | None) -> str | None:
        """Project of a Vero ``auth_token`` (compared by hash)."""
        return self.vero_tokens.get(hash_key(token)) if token else None

    def by_vtcdn_key(self, key: str | None) -> str | None:
        """Project of a vtcdn API key (compared by hash)."""
        return self.vtcdn_keys.get(hash_key(key)) if key else None

    def by_domain(self, domain: str | None) -> str | None:
        """Project of a site domain (``www.`` and case ignored)."""
        return self.domains.get(sanitize_hostname(domain)) if domain else None
