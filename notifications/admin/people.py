"""The People pages of notifications: devices, preferences, quiet hours, consents and the
suppression list. People set the first four through the API: staff read them here, searched by a
user's exact id. Suppressions are added and removed here, through the services."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.html import format_html
from unfold.decorators import display

from communication.models import User
from notifications import selectors, services
from notifications.admin.common import ConsoleAdmin, ReadOnlyAdmin, cut, pairs, when
from notifications.models import (
    Channel,
    Consent,
    Device,
    Digest,
    NotificationPreference,
    QuietHours,
    Suppression,
    suppression_hash,
)


class ByUser(ReadOnlyAdmin):
    """Searched by a user's exact id (``user_id``) or staff username, and by the exact value of
    an encrypted column through its hash (``hashed_fields``)."""

    search_fields = ("user__external_id",)  # shows the box; the search is get_search_results
    search_help_text = "Exact user id"
    # LookupHashFields of encrypted columns (a token, an endpoint), matched by the term's hash.
    hashed_fields: tuple[str, ...] = ()
    list_select_related = ("user",)
    sortable_by = ()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(user_id__in=selectors.user_ids_matching(term))
        for name in self.hashed_fields:
            field = queryset.model._meta.get_field(name)
            match |= Q(**{name: field.hash(term)})
        return queryset.filter(match), False

    @display(description="user")
    def person(self, obj: Any) -> str:
        return obj.user.external_id or obj.user.get_username()


@admin.register(Device)
class DeviceAdmin(ByUser):
    list_display = ("person", "platform", "where", "active", "failure_count", "error", "seen")
    list_filter = ("platform", "active")
    search_help_text = "Exact user id, FCM token or Web Push endpoint"
    hashed_fields = ("token_hash", "endpoint_hash")
    ordering = ("-id",)
    fields = (
        "user",
        "platform",
        "app_id",
        "browser",
        "locale",
        "token",
        "endpoint",
        "active",
        "failure_count",
        "last_error",
        "created_at",
        "last_seen_at",
        "deactivated_at",
    )
    readonly_fields = fields

    @display(description="app or browser")
    def where(self, obj: Device) -> str:
        return obj.app_id or obj.browser or "—"

    @display(description="last error")
    def error(self, obj: Device) -> str:
        return cut(obj.last_error, 40)

    @display(description="last seen")
    def seen(self, obj: Device) -> str:
        return when(obj.last_seen_at)


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ByUser):
    list_display = ("person", "category_key", "channel", "enabled", "mode", "updated_at")
    list_filter = ("category", "channel", "enabled", "mode")
    ordering = ("-id",)
    fields = (
        "user",
        "category",
        "channel",
        "enabled",
        "mode",
        "digest_time",
        "digest_weekday",
        "updated_at",
    )
    readonly_fields = fields

    @display(description="category")
    def category_key(self, obj: NotificationPreference) -> str:
        return obj.category_id


@admin.register(QuietHours)
class QuietHoursAdmin(ByUser):
    list_display = ("person", "start", "end", "timezone", "enabled", "updated_at")
    list_filter = ("enabled",)
    ordering = ("-id",)
    fields = ("user", "start", "end", "timezone", "enabled", "updated_at")
    readonly_fields = fields

    @display(description="time zone")
    def timezone(self, obj: QuietHours) -> str:
        return obj.user.timezone or "UTC"


@admin.register(Consent)
class ConsentAdmin(ByUser):
    list_display = ("person", "granted", "scope", "source", "given")
    list_filter = ("granted", "channel", "category")
    ordering = ("-id",)
    fields = ("user", "granted", "channel", "category", "source", "evidence_view", "created_at")
    readonly_fields = fields

    @display(description="channel and category")
    def scope(self, obj: Consent) -> str:
        return f"{obj.channel or 'every channel'} · {obj.category_id or 'every category'}"

    @display(description="when")
    def given(self, obj: Consent) -> str:
        return when(obj.created_at)

    @display(description="evidence")
    def evidence_view(self, obj: Consent) -> str:
        return pairs(obj.evidence)


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ("channel", "address", "reason", "detail")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("channel") and data.get("address"):
            try:
                data["address"] = services.address_normalize(data["channel"], data["address"])
            except ValidationError as exc:
                self.add_error("address", exc)
        return data


@admin.register(Suppression)
class SuppressionAdmin(ConsoleAdmin):
    """Addresses nothing is sent to. Staff add one by hand (a request to stop, a known-bad
    address) and remove one when the address works again; both through the services."""

    form = SuppressionForm
    list_display = ("shown_address", "channel", "reason", "detail_short", "added")
    list_filter = ("channel", "reason")
    search_fields = ("address",)  # shows the box; the search is get_search_results
    search_help_text = "Exact address (email or E.164 number)"
    sortable_by = ()
    ordering = ("-id",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # Every channel named: the unique (channel, address_hash) index serves the lookup, and
        # finds an erased address too (its hash stays).
        addresses = Q(pk__in=[])
        for channel in Channel.values:
            try:
                address = services.address_normalize(channel, term)
            except ValidationError:
                continue
            addresses |= Q(channel=channel, address_hash=suppression_hash(address))
        return queryset.filter(addresses), False

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"reason": Suppression.Reason.MANUAL, **super().get_changeform_initial_data(request)}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.SHOWN if obj else ()

    # An existing entry is shown, not edited: its address as shown_address ("[erased]" once
    # only its hash is kept), never the raw field beside it.
    SHOWN = ("channel", "shown_address", "reason", "detail", "created_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.SHOWN if obj else super().get_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        added = services.suppression_add(
            channel=obj.channel, address=obj.address, reason=obj.reason, detail=obj.detail
        )
        obj.pk = added.pk

    def delete_model(self, request, obj):
        services.suppressions_remove(ids=[obj.pk], actor=f"admin:{request.user.get_username()}")

    def response_delete(self, request, obj_display, obj_id):
        response = super().response_delete(request, obj_display, obj_id)
        if IS_POPUP_VAR in request.POST:
            return response
        # Back to the list (Django goes to the index when the page has nothing to change).
        return HttpResponseRedirect(reverse("admin:notifications_suppression_changelist"))

    def delete_queryset(self, request, queryset):
        services.suppressions_remove(
            ids=list(queryset.values_list("pk", flat=True)),
            actor=f"admin:{request.user.get_username()}",
        )

    @display(description="address")
    def shown_address(self, obj: Suppression) -> str:
        return obj.shown_address

    @display(description="detail")
    def detail_short(self, obj: Suppression) -> str:
        return cut(obj.detail, 60)

    @display(description="added")
    def added(self, obj: Suppression) -> str:
        return when(obj.created_at)


@admin.register(Digest)
class DigestAdmin(ByUser):
    """The digests sent, and above them, for the user searched, what is held for their next
    digests (per channel: when it goes out, how many, the newest items)."""

    list_title = "Digests"
    list_display = ("person", "channel", "item_count", "reason", "released", "items", "message")
    list_filter = ("channel", "reason")
    search_help_text = "Exact user id: shows what is held for them now"
    list_before_template = "admin/notifications/digest/held.html"
    ordering = ("-released_at", "-id")
    fields = (
        "user",
        "channel",
        "reason",
        "item_count",
        "window_start",
        "window_end",
        "released_at",
        "delivery",
    )
    readonly_fields = fields

    # The held items shown for a searched user, per channel.
    HELD_SHOWN = 20

    def changelist_view(self, request, extra_context=None):
        term = request.GET.get("q", "").strip()
        held = None
        users = selectors.user_ids_matching(term) if term else []
        if len(users) == 1:
            user = User.objects.get(pk=users[0])
            held = {
                "user": user,
                "channels": selectors.digest_held(user, limit=self.HELD_SHOWN),
                "log": reverse("admin:notifications_delivery_changelist")
                + "?"
                + urlencode({"status__exact": "held", "q": term}),
            }
        return super().changelist_view(request, {"held": held, **(extra_context or {})})

    @display(description="released")
    def released(self, obj: Digest) -> str:
        return when(obj.released_at)

    @display(description="items")
    def items(self, obj: Digest) -> str:
        url = reverse("admin:notifications_delivery_changelist") + f"?digest__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">{} item{}</a>', url, obj.item_count, pluralize(obj.item_count)
        )

    @display(description="digest message")
    def message(self, obj: Digest) -> str:
        url = reverse("admin:notifications_delivery_change", args=[obj.delivery_id])
        return format_html('<a href="{}">delivery</a>', url)
