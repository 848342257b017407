from rest_framework import serializers

from communication.models import User


class MeSerializer(serializers.ModelSerializer):
    user_id = serializers.CharField(source="external_id", read_only=True)

    class Meta:
        model = User
        fields = [
            "user_id",
            "name",
            "email",
            "phone",
            "locale",
            "timezone",
            "roles",
            "organization",
        ]
        read_only_fields = fields
