"""Expedited (SUSAR) reporting: expectedness against the RSI, the SUSAR decision and its clock, and the report
drafts (narrative, CIOMS I, ICH E2B(R3)). Pure modules here; the service layer is `expedited.cases`."""
