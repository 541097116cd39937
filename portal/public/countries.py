"""Country names for the public pages, from the ROR subset the project ships
(``portal/institutions/data/ror-subset.json``: each record has an ISO 3166-1 alpha-2
``country_code`` and its GeoNames ``country`` name). A code none of those records has is shown
as the code itself: no name is made up."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import lru_cache
from importlib import resources

#: The package and file that hold the ROR subset (read once per process).
ROR_PACKAGE, ROR_FILE = "portal.institutions", "data/ror-subset.json"


@lru_cache(maxsize=1)
def country_names() -> dict[str, str]:
    """ISO code (upper case) → the name most records with that code give it."""
    try:
        text = resources.files(ROR_PACKAGE).joinpath(ROR_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - shipped with the app
        return {}
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for record in json.loads(text):
        code, name = record.get("country_code"), record.get("country")
        if isinstance(code, str) and isinstance(name, str) and len(code) == 2 and name.strip():
            seen[code.upper()][name.strip()] += 1
    return {code: names.most_common(1)[0][0] for code, names in seen.items()}


def country_name(code: str) -> str:
    """The country's name, or its code when the shipped data does not name it."""
    return country_names().get(code.upper(), code.upper())
