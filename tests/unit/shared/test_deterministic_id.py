"""Deterministic ids are UUIDv5 in the project's namespace: computed faster, but the very same ids as before
(a changed id would make every replay look new to the consumers' inboxes)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from shared.events import ID_NAMESPACE, deterministic_id


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_the_id_is_uuid5_of_the_parts_joined_by_the_unit_separator(parts: list[str]) -> None:
    assert deterministic_id(*parts) == str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts)))


def test_a_known_id_stays_the_same() -> None:
    assert deterministic_id("inbound", "edc", "msg-1") == str(uuid.uuid5(ID_NAMESPACE, "inbound\x1fedc\x1fmsg-1"))
    assert uuid.UUID(deterministic_id("x")).version == 5
