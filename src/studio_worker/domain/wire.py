"""The base model for every JSON object on the wire (protocol.md, preamble).

camelCase keys, unknown fields ignored on receive, absent optionals omitted on send,
`null` accepted on receive for every field that has a default (it then takes the default).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_take_defaults(cls, data: Any) -> Any:
        # Every frame and nested object received passes here: no copy when nothing is null.
        if not isinstance(data, dict) or not any(v is None for v in data.values()):
            return data
        optional = _optional_keys(cls)
        return {k: v for k, v in data.items() if not (v is None and k in optional)}

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict: camelCase keys, `None` optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@cache
def _optional_keys(model: type[WireModel]) -> frozenset[str]:
    """Field names and aliases of `model`'s fields that have a default."""
    return frozenset(
        key
        for name, field in model.model_fields.items()
        if not field.is_required()
        for key in (name, field.alias)
        if key
    )
