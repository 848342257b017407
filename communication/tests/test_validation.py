"""InputSerializer: one instance per class validates every request, from any thread, with the
answers a per-request serializer gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework import serializers

from communication.api.validation import InputSerializer


class Item(InputSerializer):
    name = serializers.CharField(max_length=10)
    tags = serializers.ListField(child=serializers.SlugField(), required=False, default=list)
    count = serializers.IntegerField(min_value=0, default=1)

    def validate(self, attrs):
        if attrs["name"] == "forbidden":
            raise serializers.ValidationError({"name": ["Not this one."]})
        return attrs


def test_concurrent_validations_keep_their_own_values():
    def one(i):
        return Item.validated({"name": f"n{i}", "tags": [f"t{i}"], "count": str(i)})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(400)))
    assert results == [{"name": f"n{i}", "tags": [f"t{i}"], "count": i} for i in range(400)]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "text",
        {},
        {"name": "x" * 11},
        {"name": "forbidden"},
        {"name": "ok", "tags": ["no slug"], "count": -1},
    ],
)
def test_errors_are_those_of_a_per_request_serializer(data):
    expected = Item(data=data)
    assert not expected.is_valid()
    with pytest.raises(serializers.ValidationError) as caught:
        Item.validated(data)
    assert caught.value.detail == expected.errors
