"""Looking institutions up in the Research Organization Registry (ROR) subset the portal ships
(``data/ror-subset.json``, CC0 1.0 — see ``data/README.md``).

The file is read once per process, on the first look-up, and indexed by ROR id, by the words of
each organisation's name and aliases, and by its domains. ``lookup`` answers the application
form's search box (by name, alias or acronym, e-mail or web domain, or ROR id); ``by_id`` pre-fills
the form from a ROR id. The subset is a sample of the registry, not all of it: a miss means manual
entry, with the ROR id's checksum verified (``services.normalise_ror``).
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from portal.core.errors import ValidationError
from portal.institutions.services import normalise_ror

#: The shipped subset of ROR records.
DATA_FILE = Path(__file__).parent / "data" / "ror-subset.json"

#: Longest query looked at (a longer one is no institution's name).
MAX_QUERY = 200
#: Most results ever returned.
MAX_RESULTS = 25

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class RorRecord:
    """One organisation of the registry, as the application form uses it."""

    id: str
    name: str
    aliases: tuple[str, ...]
    country_code: str
    country: str
    city: str | None
    website: str | None
    domains: tuple[str, ...]
    types: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """What ``/apply/ror`` answers for it (the fields the form pre-fills, and what to show)."""
        return {
            "id": self.id,
            "name": self.name,
            "aliases": list(self.aliases),
            "country_code": self.country_code,
            "country": self.country,
            "city": self.city,
            "website": self.website,
            "domains": list(self.domains),
        }


@dataclass(frozen=True)
class _Index:
    by_id: dict[str, RorRecord]
    #: Every word of every name and alias, sorted (for prefix search), and the ids it occurs in.
    words: list[str]
    ids_by_word: dict[str, frozenset[str]]
    by_domain: dict[str, str]


_lock = threading.Lock()
_index: _Index | None = None


def _fold(text: str) -> str:
    """Lower case without accents (``Zürich`` → ``zurich``), for matching typed text."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


def _record(raw: dict[str, Any]) -> RorRecord:
    return RorRecord(
        id=str(raw["id"]),
        name=str(raw["name"]),
        aliases=tuple(str(a) for a in raw.get("aliases") or ()),
        country_code=str(raw.get("country_code") or "").upper(),
        country=str(raw.get("country") or ""),
        city=raw.get("city"),
        website=raw.get("website"),
        domains=tuple(str(d).lower() for d in raw.get("domains") or ()),
        types=tuple(str(t) for t in raw.get("types") or ()),
    )


def _build(path: Path) -> _Index:
    records = [_record(r) for r in json.loads(path.read_text(encoding="utf-8"))]
    by_id = {r.id: r for r in records}
    ids_by_word: dict[str, set[str]] = {}
    by_domain: dict[str, str] = {}
    for r in records:
        for text in (r.name, *r.aliases):
            for word in _words(text):
                ids_by_word.setdefault(word, set()).add(r.id)
        for domain in r.domains:
            by_domain.setdefault(domain, r.id)
    return _Index(
        by_id=by_id,
        words=sorted(ids_by_word),
        ids_by_word={w: frozenset(ids) for w, ids in ids_by_word.items()},
        by_domain=by_domain,
    )


def _loaded() -> _Index:
    """The index, built on first use (once per process, whichever thread asks first)."""
    global _index
    if _index is None:
        with _lock:
            if _index is None:
                _index = _build(DATA_FILE)
    return _index


def by_id(ror_id: str | None) -> RorRecord | None:
    """The subset's record for ``ror_id`` (any form ``normalise_ror`` accepts), or None when the
    id is malformed or not in the subset."""
    try:
        url = normalise_ror(ror_id)
    except ValidationError:
        return None
    return _loaded().by_id.get(url) if url else None


def _as_domain(text: str) -> str | None:
    """The domain in an e-mail address, a web address or a bare domain; None for other text."""
    value = text.strip().lower()
    if "@" in value:
        value = value.rsplit("@", 1)[1]
    elif "://" in value:
        value = urlsplit(value).hostname or ""
    value = value.removeprefix("www.").rstrip(".")
    if " " in value or "." not in value or not re.fullmatch(r"[a-z0-9.-]+", value):
        return None
    return value


def _by_domain(index: _Index, domain: str) -> list[str]:
    """Ids whose domains are ``domain`` or a parent of it (``cs.mit.edu`` finds ``mit.edu``),
    the most specific first."""
    parts = domain.split(".")
    found = []
    for i in range(len(parts) - 1):
        rid = index.by_domain.get(".".join(parts[i:]))
        if rid is not None and rid not in found:
            found.append(rid)
    return found


def _prefixed(index: _Index, word: str) -> set[str]:
    """Ids of the records with a word starting with ``word``."""
    ids: set[str] = set()
    start = bisect.bisect_left(index.words, word)
    for w in index.words[start:]:
        if not w.startswith(word):
            break
        ids |= index.ids_by_word[w]
    return ids


def _rank(record: RorRecord, folded: str, words: list[str]) -> tuple[int, int, int, str]:
    """Exact name, then exact alias or acronym, then whole words over mere prefixes; universities
    before other kinds; shorter names first."""
    name = _fold(record.name)
    if name == folded:
        score = 0
    elif folded in (_fold(a) for a in record.aliases):
        score = 1
    else:
        record_words = set(_words(" ".join([record.name, *record.aliases])))
        score = 2 if all(w in record_words for w in words) else 3
    kind = 0 if "education" in record.types else 1
    return (score, kind, len(record.name), record.name)


def lookup(query: str | None, limit: int = 10) -> list[RorRecord]:
    """Organisations of the subset matching ``query``: a ROR id (``https://ror.org/…``, ``ror.org/…``
    or the bare id), an e-mail address or domain (``someone@cs.mit.edu`` finds ``mit.edu``), or
    words of the name or an alias (each typed word the start of one of its words; accents and
    case ignored), best matches first; at most ``limit`` of them."""
    text = (query or "").strip()[:MAX_QUERY]
    limit = max(0, min(limit, MAX_RESULTS))
    if not text or limit == 0:
        return []
    index = _loaded()
    record = by_id(text)
    if record is not None:
        return [record]
    domain = _as_domain(text)
    if domain is not None:
        owners = _by_domain(index, domain)
        if owners:
            return [index.by_id[i] for i in owners[:limit]]
    words = _words(text)
    if not words:
        return []
    found: set[str] | None = None
    for word in sorted(set(words), key=len, reverse=True):
        matching = _prefixed(index, word)
        found = matching if found is None else found & matching
        if not found:
            return []
    folded = " ".join(words)
    ranked = sorted((index.by_id[i] for i in found or ()), key=lambda r: _rank(r, folded, words))
    return ranked[:limit]
