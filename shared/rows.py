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

from sqlalchemy import inspect
from sqlalchemy.orm import ClassManager, Mapper
from sqlmodel import SQLModel

M = TypeVar("M", bound=SQLModel)


def new_row(model: type[M], /, **values: Any) -> M:
    """`model(**values)` for a table model, with its defaults; a name that is no field, or a required field left
    out, is refused (the constructor would store a row without it)."""
    fields = model.model_fields
    unknown = values.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    row: M = _manager(model).new_instance()
    state = row.__dict__
    for name, field in fields.items():
        if name in values:
            state[name] = values[name]
        elif field.is_required():
            raise TypeError(f"{model.__name__}: {name} is required")
        else:
            state[name] = field.get_default(call_default_factory=True)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return row


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
