"""New table rows without SQLModel's constructor, for the consumers' hot paths.

SQLModel's constructor sets every field twice, through SQLAlchemy's instrumentation and then pydantic's
`__setattr__` (table models are not validated either way): about 37 us for a 16-column row, which is most of what
storing a lab result costs. A row that is only inserted needs its values in its `__dict__` and its SQLAlchemy state;
`new_row` sets exactly that (about 5 us). What happens to the row afterwards (added, flushed, changed, read) is
the same as for a constructed one.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from pydantic.fields import FieldInfo
from sqlalchemy import inspect
from sqlalchemy.orm import ClassManager, Mapper
from sqlmodel import SQLModel

M = TypeVar("M", bound=SQLModel)


def new_row(model: type[M], /, **values: Any) -> M:
    """`model(**values)` for a table model, with its defaults; a name that is no field, or a required field left
    out, is refused (the constructor would store a row without it)."""
    names, plan = _fields(model)
    if not values.keys() <= names:
        unknown = values.keys() - names
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    row: M = _manager(model).new_instance()
    state = row.__dict__
    for name, field, required, constant in plan:
        if name in values:
            state[name] = values[name]
        elif required:
            raise TypeError(f"{model.__name__}: {name} is required")
        elif constant:
            state[name] = field.default
        else:
            state[name] = field.get_default(call_default_factory=True)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return row


IMMUTABLE = (type(None), bool, int, float, str, bytes)
"""Defaults pydantic hands out as they are (`get_default` copies any other: a list, a dict, an object)."""


@cache
def _fields(model: type[SQLModel]) -> tuple[frozenset[str], tuple[tuple[str, FieldInfo, bool, bool], ...]]:
    """The model's field names, and per field: required, and whether its default is a constant to set as is
    (asking pydantic for each default of each row was a third of what building one cost)."""
    fields = model.model_fields
    plan = tuple(
        (
            name,
            field,
            field.is_required(),
            field.default_factory is None and type(field.default) in IMMUTABLE,
        )
        for name, field in fields.items()
    )
    return frozenset(fields), plan


@cache
def _manager(model: type[SQLModel]) -> ClassManager[Any]:
    """The model's SQLAlchemy class manager, its mapper configured (as the constructor would: the first row of a
    process may be built here). Once configured, a mapper stays so."""
    mapper: Mapper[Any] = inspect(model)
    mapper.registry.configure()
    return mapper.class_manager


def assign(row: SQLModel, /, **values: Any) -> None:
    """Set the fields whose value differs from the row's. A reassessment writes back mostly what it read, and an
    equal value set again still costs SQLAlchemy's history and pydantic's bookkeeping (about 5 us a field)."""
    current = row.__dict__
    for name, value in values.items():
        if name not in current or current[name] != value:
            setattr(row, name, value)
