"""Pure: is a reaction expected, judged against the protocol's reference safety information (RSI)?

Rules (sources in the module's tests and the README of this package):
- listed by CTCAE term (case-insensitive; a verbatim term mapped as the DLT rules map it) or by MedDRA code: a
  reaction the RSI does not list is unexpected (ICH E2A II.A.3; EU CTR Annex III 2.3);
- worse than the highest grade the RSI expects is unexpected (ICH E2A II.A.3: greater severity);
- a fatal outcome is unexpected unless the RSI expects the reaction at grade 5 (EU CT-3 7.2.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.safety.ae_terms import map_ae_term
from shared.protocol import ExpectedReaction, ReferenceSafetyInformation

Expectedness = Literal["expected", "unexpected"]


@dataclass(frozen=True)
class ExpectednessProposal:
    expectedness: Expectedness
    reason: str
    rsi_version: str


def _listed(rsi: ReferenceSafetyInformation, term: str, meddra_code: str | None) -> ExpectedReaction | None:
    """The RSI entry for the term, its MedDRA code, or the one CTCAE term it means (the DLT rules' mapping:
    synonyms and spellings, so a verbatim Pyrexia is the listed Fever)."""
    mapped = map_ae_term(term, ctcae_term=None, meddra_code=None).terms
    wanted = {term.strip().casefold()} | ({mapped[0].casefold()} if len(mapped) == 1 else set())
    for reaction in rsi.expected_reactions:
        if reaction.term.casefold() in wanted or (meddra_code and reaction.meddra_code == meddra_code):
            return reaction
    return None


def propose_expectedness(
    rsi: ReferenceSafetyInformation, *, term: str, meddra_code: str | None, grade: int | None, fatal: bool
) -> ExpectednessProposal:
    """The automatic proposal an officer confirms or overrides (with a reason)."""
    where = f"RSI {rsi.document} v{rsi.version} ({rsi.date.isoformat()})"
    reaction = _listed(rsi, term, meddra_code)
    if reaction is None:
        return ExpectednessProposal("unexpected", f"'{term}' is not listed in the {where}", rsi.version)
    ceiling = reaction.max_grade
    if fatal and ceiling != 5:
        return ExpectednessProposal(
            "unexpected", f"'{reaction.term}' is listed, but not as fatal, in the {where}", rsi.version
        )
    if ceiling is not None and grade is not None and grade > ceiling:
        return ExpectednessProposal(
            "unexpected",
            f"'{reaction.term}' is expected up to grade {ceiling} in the {where}; this is grade {grade}",
            rsi.version,
        )
    if ceiling is not None and grade is None:
        return ExpectednessProposal(
            "unexpected",
            f"'{reaction.term}' is expected up to grade {ceiling} in the {where}, but no grade was reported",
            rsi.version,
        )
    bound = f" up to grade {ceiling}" if ceiling is not None else ""
    return ExpectednessProposal("expected", f"'{reaction.term}' is listed{bound} in the {where}", rsi.version)
