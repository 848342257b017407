"""Validating request bodies with a DRF serializer built once per class.

A serializer deep-copies its declared fields each time it is instantiated (``Serializer.fields``),
nested serializers and validators included; on a small endpoint that copy costs more than the
validation. A serializer that only validates input holds no per-request state in its fields, so
one instance per class can run every request's validation (DRF's own ``run_validation``), from
any thread. The schema still reads the same class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework import serializers


class InputSerializer(serializers.Serializer):
    """Base of request-body serializers validated through :meth:`validated`.

    Subclasses must not read per-request state (``self.initial_data``, ``self.instance``,
    ``self.context``) in their ``validate*`` methods: they receive the values as arguments.
    """

    _shared: ClassVar[dict[type, serializers.Serializer]] = {}

    @classmethod
    def validated(cls, data: Any) -> Any:
        """``data`` validated (DRF's ``validated_data``), or ``ValidationError`` with the body
        ``is_valid(raise_exception=True)`` raises."""
        shared = cls._shared.get(cls)
        if shared is None:
            shared = cls._shared.setdefault(cls, cls())
        try:
            return shared.run_validation(data)
        except serializers.ValidationError:
            # The error answer is the per-request serializer's own (its ``errors`` shapes a few
            # cases, such as a null body); errors are rare enough to validate twice.
            serializer = cls(data=data)
            serializer.is_valid(raise_exception=True)
            raise
