"""Expedited (SUSAR) reporting: expectedness against the RSI, the SUSAR decision and its clock (safety), the
report drafts (narrative, CIOMS I, ICH E2B(R3)); notify turns the SUSAR signals into per-recipient obligations
(`services.notify.susar_alerts`). Pure modules here; the service layers are `cases` and `loading`.

Rules encoded, with their sources:
- SUSAR = serious (ICH E2A II.B) + suspected adverse reaction (a reasonable possibility of a causal
  relationship, ICH E2A II.A.1 / III.A.1: possible, probable, definite) + unexpected with respect to the
  reference safety information (ICH E2A II.A.3; EU CTR 536/2014 Art. 2(2)(33) and Annex III 2.3).
- Causality: the worst of the investigator's and the sponsor's; the sponsor may not downgrade the
  investigator's (EU CT-3 communication 2011/C 172/01, 7.2.3.1; EU CTR Annex III 2.2).
- Expectedness: proposed from the RSI (not listed, graded worse than listed, or fatal when the RSI does not
  list it as fatal: unexpected; ICH E2A II.A.3, CT-3 7.2.3.2), confirmed or overridden by an officer with a
  reason; new facts that change the proposal void the confirmation.
- Day 0: the sponsor's first awareness of a case meeting the criteria (ICH E2A III.A.2; CT-3 7.2.3.3): our
  receipt of the AE version that made it a SUSAR, or the sponsor's own causality/expectedness decision when
  that is what made it one (21 CFR 312.32(c)(1): "determines that the information qualifies"). It is a function
  of when each version was received and each assessment made, never of the order we processed them in: a
  version redelivered late lands where its receipt puts it, and when that makes day 0 (or the 7-day start of
  an upgrade) earlier, every deadline moves earlier with it (`clock_earlier`; overdue at once if already past).
- Fatal or life-threatening: report by day 7, complete by day 15 (ICH E2A III.A.2.a; EU CTR Art. 42(2)(a);
  21 CFR 312.32(c)(2)); otherwise by day 15 (ICH E2A III.A.2.b; EU CTR Art. 42(2)(b); 21 CFR 312.32(c)(1)).
- Becomes fatal or life-threatening later: no later than 7 days after that knowledge (EU CTR Art. 42(2)(c)).
- Relevant follow-up information on a reported case: a follow-up report, 15 days (CT-3 7.2.3.4; protocol option).
- Recipients: those the protocol names (regulator: EU CTR Art. 42(1), 21 CFR 312.32(c)(1); ethics committee:
  Directive 2001/20/EC Art. 17 / national law; investigators: 21 CFR 312.32(c)(1), CT-3 7.2.3.5).
"""
