"""Pure: which CTCAE v5.0 term(s) an AE's verbatim term means, so DLT rules match terms, not spellings.

In order: the MedDRA code when given (CTCAE v5.0 carries one per term), the `ctcae_term` the site chose, the
verbatim term as a CTCAE term, then a synonym table (the built-in one plus the protocol's `dlt.synonyms`).
Matching ignores case, whitespace, punctuation and British spellings (anaemia, haem-, oedema, leucopaenia,
diarrhoea...). There is deliberately no fuzzy matching: "Hypokalemia" and "Hyperkalemia" differ by two
letters, and a DLT rule must never guess between them. A term that maps to nothing is a data-quality finding
(`unmapped_term`) for the site, and the AE is still judged under its verbatim term by the criteria that do
not name terms.

Pancytopenia has no CTCAE term: it maps to the three cytopenias it stands for, so a haematological rule
compares it against the lowest of their baselines (a worsening of any line could be hidden in it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.safety.ctcae.terms import all_terms, lookup_meddra

MappedBy = Literal["meddra_code", "ctcae_term", "term", "synonym"]

BUILT_IN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "thrombocytopenia": ("Platelet count decreased",),
    "thrombopenia": ("Platelet count decreased",),
    "low platelets": ("Platelet count decreased",),
    "neutropenia": ("Neutrophil count decreased",),
    "neutropaenia": ("Neutrophil count decreased",),
    "granulocytopenia": ("Neutrophil count decreased",),
    "agranulocytosis": ("Neutrophil count decreased",),
    "anemia": ("Anemia",),
    "leukopenia": ("White blood cell decreased",),
    "white blood cell count decreased": ("White blood cell decreased",),
    "lymphopenia": ("Lymphocyte count decreased",),
    "lymphocytopenia": ("Lymphocyte count decreased",),
    "pancytopenia": ("Anemia", "Neutrophil count decreased", "Platelet count decreased"),
    "bicytopenia": ("Neutrophil count decreased", "Platelet count decreased"),
    "neutropenic fever": ("Febrile neutropenia",),
    "crs": ("Cytokine release syndrome",),
    "infusion reaction": ("Infusion related reaction",),
    "pyrexia": ("Fever",),
    "alt increased": ("Alanine aminotransferase increased",),
    "ast increased": ("Aspartate aminotransferase increased",),
}

_SPELLINGS = (
    ("haem", "hem"),
    ("aemia", "emia"),
    ("oedem", "edem"),
    ("oesoph", "esoph"),
    ("rrhoea", "rrhea"),
    ("leuco", "leuko"),
    ("paenia", "penia"),
    ("tumour", "tumor"),
    ("oestr", "estr"),
    ("anaes", "anes"),
)


def normalise(text: str) -> str:
    """Case-, whitespace-, punctuation- and British-spelling-insensitive form of a term."""
    folded = re.sub(r"[^0-9a-z]+", " ", text.casefold()).strip()
    for british, american in _SPELLINGS:
        folded = folded.replace(british, american)
    return folded


@functools.cache
def _ctcae_by_normal() -> Mapping[str, str]:
    return {normalise(info.term): info.term for info in all_terms()}


@dataclass(frozen=True)
class TermMapping:
    terms: tuple[str, ...]
    """The CTCAE terms the AE means; empty when it maps to none."""
    by: MappedBy | None
    detail: str

    @property
    def mapped(self) -> bool:
        return bool(self.terms)


def map_ae_term(
    term: str, *, ctcae_term: str | None, meddra_code: str | None, synonyms: Mapping[str, str] | None = None
) -> TermMapping:
    if meddra_code:
        info = lookup_meddra(meddra_code)
        if info is not None:
            return TermMapping((info.term,), "meddra_code", f"MedDRA code {meddra_code} is CTCAE term {info.term!r}")
    known = _ctcae_by_normal()
    for label, text in (("ctcae_term", ctcae_term), ("term", term)):
        if text and (found := known.get(normalise(text))) is not None:
            by: MappedBy = "ctcae_term" if label == "ctcae_term" else "term"
            return TermMapping((found,), by, f"{text!r} is CTCAE term {found!r}")
    table: dict[str, tuple[str, ...]] = {normalise(k): (v,) for k, v in (synonyms or {}).items()}
    table.update({normalise(k): v for k, v in BUILT_IN_SYNONYMS.items() if normalise(k) not in table})
    for text in (ctcae_term, term):
        if text and (hit := table.get(normalise(text))) is not None:
            return TermMapping(hit, "synonym", f"{text!r} means CTCAE {', '.join(repr(t) for t in hit)}")
    said = f"{term!r}" + (f" (ctcae_term {ctcae_term!r})" if ctcae_term else "")
    code = f", MedDRA code {meddra_code} is not in CTCAE v5.0" if meddra_code else ""
    return TermMapping((), None, f"{said} maps to no CTCAE v5.0 term{code}")
