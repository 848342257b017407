"""``/api/v1/templates``: read, manage, preview and render templates.

Views check input and permissions and call ``services`` / ``selectors``; nothing else.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from templates_app import selectors, services
from templates_app.api import serializers as s
from templates_app.api.permissions import MANAGE, READ, RENDER, ScopeOrStaff
from templates_app.models import Channel, VersionStatus, normalize_language

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


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class _MethodPermissions:
    """``permission_classes`` chosen by HTTP method: reads vs management."""

    read_permissions = (ScopeOrStaff(*READ),)
    write_permissions = (ScopeOrStaff(*MANAGE),)

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [p() for p in self.read_permissions]
        return [p() for p in self.write_permissions]


class TemplateListView(_MethodPermissions, generics.ListAPIView):
    """Templates, filtered by category, channel and live language."""

    pagination_class = Pagination
    serializer_class = s.TemplateSerializer

    def get_queryset(self):
        params = self.request.query_params
        active = params.get("active")
        language = params.get("language")
        return selectors.template_list(
            category=params.get("category"),
            channel=params.get("channel"),
            language=normalize_language(language) if language else None,
            active=None if active is None else active.lower() in ("1", "true", "yes"),
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
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="templates_create",
        request=s.TemplateCreateSerializer,
        responses={201: s.TemplateDetailSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request):
        data = _valid(s.TemplateCreateSerializer, request.data)
        template = services.template_create(actor=request.user, **data)
        return Response(
            s.TemplateDetailSerializer(selectors.template_get(template.key)).data,
            status=status.HTTP_201_CREATED,
        )


class TemplateDetailView(_MethodPermissions, APIView):
    @extend_schema(
        operation_id="templates_retrieve", responses={200: s.TemplateDetailSerializer, **ERRORS}
    )
    def get(self, request, key: str):
        return Response(s.TemplateDetailSerializer(selectors.template_get(key)).data)

    @extend_schema(
        operation_id="templates_partial_update",
        request=s.TemplateUpdateSerializer,
        responses={200: s.TemplateDetailSerializer, **ERRORS},
    )
    def patch(self, request, key: str):
        data = _valid(s.TemplateUpdateSerializer, request.data, partial=True)
        template = selectors.template_get(key)
        services.template_update(template=template, actor=request.user, **data)
        return Response(s.TemplateDetailSerializer(selectors.template_get(key)).data)


class CategoryListView(generics.ListAPIView):
    """Categories that have templates."""

    permission_classes = [ScopeOrStaff(*READ)]
    serializer_class = s.TemplateCategorySerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.category_list_with_templates()

    @extend_schema(operation_id="templates_categories_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class VersionListView(generics.ListAPIView):
    """Versions, newest first; ``?template=<key>`` for one template's history."""

    permission_classes = [ScopeOrStaff(*READ)]
    serializer_class = s.TemplateVersionSerializer
    pagination_class = Pagination

    def get_queryset(self):
        params = self.request.query_params
        language = params.get("language")
        return selectors.version_list(
            template=params.get("template"),
            language=s._language(language) if language else None,
            status=params.get("status"),
        )

    @extend_schema(
        operation_id="templates_versions_list",
        parameters=[
            OpenApiParameter("template", str, description="Template key"),
            OpenApiParameter("language", str),
            OpenApiParameter("status", str, enum=VersionStatus.values),
        ],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class VersionDetailView(_MethodPermissions, APIView):
    @extend_schema(
        operation_id="templates_versions_retrieve",
        responses={200: s.TemplateVersionSerializer, **ERRORS},
    )
    def get(self, request, version_id):
        return Response(s.TemplateVersionSerializer(selectors.version_get(version_id)).data)

    @extend_schema(
        operation_id="templates_versions_partial_update",
        request=s.TemplateVersionUpdateSerializer,
        responses={200: s.TemplateVersionSerializer, **ERRORS, **CONFLICT},
        description="Edits a draft; versions past draft are immutable.",
    )
    def patch(self, request, version_id):
        data = _valid(s.TemplateVersionUpdateSerializer, request.data, partial=True)
        version = selectors.version_get(version_id)
        version = services.version_update(version=version, actor=request.user, **data)
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)


class TemplateVersionsView(_MethodPermissions, APIView):
    """A template's versions; POST writes a draft."""

    @extend_schema(
        operation_id="templates_template_versions_list",
        responses={200: s.TemplateVersionSerializer(many=True), **ERRORS},
    )
    def get(self, request, key: str):
        selectors.template_require(key)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.version_list(template=key), request, self)
        return paginator.get_paginated_response(s.TemplateVersionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="templates_versions_create",
        request=s.TemplateVersionCreateSerializer,
        responses={201: s.TemplateVersionSerializer, **ERRORS},
    )
    def post(self, request, key: str):
        data = _valid(s.TemplateVersionCreateSerializer, request.data)
        template = selectors.template_get(key)
        version = services.version_create(template=template, actor=request.user, **data)
        return Response(
            s.TemplateVersionSerializer(selectors.version_get(version.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class VersionActionView(APIView):
    """``submit`` (author), ``approve`` (someone else), ``reject`` (with a note)."""

    permission_classes = [ScopeOrStaff(*MANAGE)]
    actions = {
        "submit": services.version_submit,
        "approve": services.version_approve,
        "reject": services.version_reject,
    }

    @extend_schema(
        operation_id="templates_versions_transition",
        request=s.TemplateReviewSerializer,
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=["submit", "approve", "reject"]
            )
        ],
        responses={200: s.TemplateVersionSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request, version_id, action: str):
        data = _valid(s.TemplateReviewSerializer, request.data)
        version = selectors.version_get(version_id)
        kwargs = {"note": data["note"]} if data.get("note") or action == "reject" else {}
        version = self.actions[action](version=version, actor=request.user, **kwargs)
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)


class TemplateRollbackView(APIView):
    permission_classes = [ScopeOrStaff(*MANAGE)]

    @extend_schema(
        operation_id="templates_rollback",
        request=s.TemplateRollbackSerializer,
        responses={200: s.TemplateVersionSerializer, **ERRORS, **CONFLICT},
        description="Makes an earlier approved version live again for its language.",
    )
    def post(self, request, key: str):
        data = _valid(s.TemplateRollbackSerializer, request.data)
        template = selectors.template_get(key)
        version = services.template_rollback(
            template=template,
            version_id=data["version"],
            language=data.get("language"),
            actor=request.user,
        )
        return Response(s.TemplateVersionSerializer(selectors.version_get(version.pk)).data)


class PreviewView(APIView):
    permission_classes = [ScopeOrStaff(*MANAGE)]

    @extend_schema(
        operation_id="templates_preview",
        request=s.TemplatePreviewSerializer,
        responses={200: s.TemplateRenderedSerializer, **ERRORS},
    )
    def post(self, request):
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
        return Response(result)


class RenderView(APIView):
    permission_classes = [ScopeOrStaff(*RENDER, staff=False)]

    @extend_schema(
        operation_id="templates_render",
        request=s.TemplateRenderSerializer,
        responses={200: s.TemplateRenderedSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request):
        data = _valid(s.TemplateRenderSerializer, request.data)
        return Response(
            services.template_render(
                key=data["template"],
                data=data["data"],
                locale=data.get("locale"),
                timezone=data.get("timezone"),
                recipient=data.get("recipient"),
            )
        )


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
