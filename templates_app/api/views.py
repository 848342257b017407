"""``/api/v1/templates``: read, manage, preview and render templates.

Views check input and permissions and call ``services`` / ``selectors``; nothing else.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from communication.api import query
from communication.api.routers import UUID
from communication.auth.permissions import ScopeOrStaff
from templates_app import selectors, services
from templates_app.api import serializers as s
from templates_app.api.permissions import MANAGE, READ, RENDER
from templates_app.models import KEY_RE, Channel, VersionStatus, normalize_language

ERRORS = {
    400: OpenApiResponse(s.TemplateErrorSerializer, description="Invalid input or template error"),
    403: OpenApiResponse(
        s.TemplateErrorSerializer, description="scope_missing, approval_by_author"
    ),
    404: OpenApiResponse(s.TemplateErrorSerializer, description="Unknown template or version"),
}
CONFLICT = {
    409: OpenApiResponse(s.TemplateErrorSerializer, description="Not allowed in this state")
}
# Renders run on an executor of their own; when it is full a render is refused at once.
BUSY = {503: OpenApiResponse(s.TemplateErrorSerializer, description="render_busy")}


class Pagination(query.StrictLimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class _MethodPermissions(viewsets.GenericViewSet):
    """A viewset whose permissions are chosen by HTTP method: reads vs management (an action
    may set either)."""

    read_permissions = (ScopeOrStaff(*READ),)
    write_permissions = (ScopeOrStaff(*MANAGE),)

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [p() for p in self.read_permissions]
        return [p() for p in self.write_permissions]


class TemplateViewSet(_MethodPermissions):
    """Templates: list, create, read, change; a template's versions and rollback; categories,
    previews and renders."""

    pagination_class = Pagination
    serializer_class = s.TemplateSerializer
    lookup_field = "key"
    lookup_value_regex = KEY_RE.strip("^$")

    def get_queryset(self):
        params = self.request.query_params
        language = params.get("language")
        return selectors.template_list(
            category=params.get("category"),
            channel=query.choice(params, "channel", Channel.values),
            language=normalize_language(language) if language else None,
            active=query.flag(params, "active"),
            search=params.get("search"),
        )

    @extend_schema(
        operation_id="templates_list",
        parameters=[
            OpenApiParameter("category", str, description="Category key"),
            OpenApiParameter("channel", str, enum=Channel.values),
            OpenApiParameter("language", str, description="Has a live version in this language"),
            OpenApiParameter("active", bool),
            OpenApiParameter("search", str, description="In key and name"),
        ],
        responses={200: s.TemplateSerializer(many=True), **ERRORS},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.TemplateSerializer(page, many=True).data)

    @extend_schema(
        operation_id="templates_create",
        request=s.TemplateCreateSerializer,
        responses={201: s.TemplateDetailSerializer, **ERRORS, **CONFLICT},
    )
    def create(self, request):
        data = _valid(s.TemplateCreateSerializer, request.data)
        template = services.template_create(actor=request.user, **data)
        return Response(
            s.TemplateDetailSerializer(selectors.template_get(template.key)).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        operation_id="templates_retrieve", responses={200: s.TemplateDetailSerializer, **ERRORS}
    )
    def retrieve(self, request, key: str):
        return Response(s.TemplateDetailSerializer(selectors.template_get(key)).data)

    @extend_schema(
        operation_id="templates_partial_update",
        request=s.TemplateUpdateSerializer,
        responses={200: s.TemplateDetailSerializer, **ERRORS},
    )
    def partial_update(self, request, key: str):
        data = _valid(s.TemplateUpdateSerializer, request.data, partial=True)
        template = selectors.template_get(key)
        services.template_update(template=template, actor=request.user, **data)
        return Response(s.TemplateDetailSerializer(selectors.template_get(key)).data)

    @extend_schema(
        operation_id="templates_categories_list",
        responses=s.TemplateCategorySerializer(many=True),
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def categories(self, request):
        """Every category a template may have: the categories a user's preferences list."""
        categories = selectors.category_list()
        return Response(s.TemplateCategorySerializer(categories, many=True).data)

    @extend_schema(
        operation_id="templates_template_versions_list",
        responses={200: s.TemplateVersionSerializer(many=True), **ERRORS},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request, key: str):
        """A template's versions; POST writes a draft."""
        selectors.template_require(key)
        page = self.paginate_queryset(selectors.version_list(template=key))
        return self.get_paginated_response(s.TemplateVersionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="templates_versions_create",
        request=s.TemplateVersionCreateSerializer,
        responses={201: s.TemplateVersionSerializer, **ERRORS},
    )
    @versions.mapping.post
    def version_create(self, request, key: str):
        data = _valid(s.TemplateVersionCreateSerializer, request.data)
        template = selectors.template_get(key)
        version = services.version_create(template=template, actor=request.user, **data)
        return Response(
            s.TemplateVersionSerializer(selectors.version_get(version.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        operation_id="templates_rollback",
        request=s.TemplateRollbackSerializer,
        responses={200: s.TemplateVersionSerializer, **ERRORS, **CONFLICT},
        description="Makes an earlier approved version live again for its language.",
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request, key: str):
        data = _valid(s.TemplateRollbackSerializer, request.data)
        template = selectors.template_get(key)
        version = services.template_rollback(
            template=template,
            version_id=data["version"],
            language=data.get("language"),
            actor=request.user,
        )
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)

    @extend_schema(
        operation_id="templates_preview",
        request=s.TemplatePreviewSerializer,
        responses={200: s.TemplateRenderedSerializer, **ERRORS, **BUSY},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        data = _valid(s.TemplatePreviewSerializer, request.data)
        if data.get("template"):
            result = services.template_preview(
                key=data["template"],
                data=data.get("data"),
                locale=data.get("locale"),
                timezone=data.get("timezone"),
                version_id=data.get("version"),
            )
        else:
            sources = {
                name: data[name]
                for name in (
                    "subject",
                    "html",
                    "text",
                    "title",
                    "body",
                    "image",
                    "deep_link",
                    "action_url",
                )
                if name in data
            }
            if "push_data" in data:
                sources["data"] = data["push_data"]
            result = services.draft_preview(
                channel=data["channel"],
                sources=sources,
                data=data.get("data"),
                locale=data.get("locale"),
                timezone=data.get("timezone"),
            )
        return Response(s.TemplateRenderedSerializer(result).data)

    @extend_schema(
        operation_id="templates_render",
        request=s.TemplateRenderSerializer,
        responses={200: s.TemplateRenderedSerializer, **ERRORS, **BUSY, **CONFLICT},
    )
    @action(detail=False, methods=["post"], write_permissions=(ScopeOrStaff(*RENDER, staff=False),))
    def render(self, request):
        data = _valid(s.TemplateRenderSerializer, request.data)
        result = services.template_render(
            key=data["template"],
            data=data["data"],
            locale=data.get("locale"),
            timezone=data.get("timezone"),
            recipient=data.get("recipient"),
        )
        return Response(s.TemplateRenderedSerializer(result).data)


class VersionViewSet(_MethodPermissions):
    """Versions, newest first (``?template=<key>`` for one template's history); a draft's edits;
    ``submit`` (author), ``approve`` (someone else), ``reject`` (with a note)."""

    pagination_class = Pagination
    serializer_class = s.TemplateVersionSerializer
    lookup_url_kwarg = "version_id"
    lookup_value_regex = UUID
    transitions = {
        "submit": services.version_submit,
        "approve": services.version_approve,
        "reject": services.version_reject,
    }

    @extend_schema(
        operation_id="templates_versions_list",
        parameters=[
            OpenApiParameter("template", str, description="Template key"),
            OpenApiParameter("language", str),
            OpenApiParameter("status", str, enum=VersionStatus.values),
        ],
        responses=s.TemplateVersionSerializer(many=True),
    )
    def list(self, request):
        params = request.query_params
        language = params.get("language")
        qs = selectors.version_list(
            template=params.get("template"),
            language=s._language(language) if language else None,
            status=query.choice(params, "status", VersionStatus.values),
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(s.TemplateVersionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="templates_versions_retrieve",
        responses={200: s.TemplateVersionSerializer, **ERRORS},
    )
    def retrieve(self, request, version_id):
        return Response(s.TemplateVersionSerializer(selectors.version_get(version_id)).data)

    @extend_schema(
        operation_id="templates_versions_partial_update",
        request=s.TemplateVersionUpdateSerializer,
        responses={200: s.TemplateVersionSerializer, **ERRORS, **CONFLICT},
        description="Edits a draft; versions past draft are immutable.",
    )
    def partial_update(self, request, version_id):
        data = _valid(s.TemplateVersionUpdateSerializer, request.data, partial=True)
        version = selectors.version_get(version_id)
        version = services.version_update(version=version, actor=request.user, **data)
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)

    @extend_schema(
        operation_id="templates_versions_transition",
        request=s.TemplateReviewSerializer,
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=["submit", "approve", "reject"]
            )
        ],
        responses={200: s.TemplateVersionSerializer, **ERRORS, **BUSY, **CONFLICT},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"(?P<action>submit|approve|reject)",
        url_name="transition",
    )
    def transition(self, request, version_id, action: str):
        data = _valid(s.TemplateReviewSerializer, request.data)
        version = selectors.version_get(version_id)
        kwargs = {"note": data["note"]} if data.get("note") or action == "reject" else {}
        version = self.transitions[action](version=version, actor=request.user, **kwargs)
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
