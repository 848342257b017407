"""Every path answers with and without a trailing slash (``/?$``): a redirect would lose a POST.

Order matters: the reserved words (categories, versions, preview, render) come before ``<key>``.
"""

from django.urls import re_path

from templates_app.api import views

KEY = r"(?P<key>[a-z0-9][a-z0-9_-]*)"
UUID = r"(?P<version_id>[0-9a-fA-F-]{36})"

urlpatterns = [
    re_path(r"^templates/?$", views.TemplateListView.as_view(), name="templates"),
    re_path(
        r"^templates/categories/?$", views.CategoryListView.as_view(), name="template-categories"
    ),
    re_path(r"^templates/versions/?$", views.VersionListView.as_view(), name="template-versions"),
    re_path(
        rf"^templates/versions/{UUID}/?$",
        views.VersionDetailView.as_view(),
        name="template-version",
    ),
    re_path(
        rf"^templates/versions/{UUID}/(?P<action>submit|approve|reject)/?$",
        views.VersionActionView.as_view(),
        name="template-version-action",
    ),
    re_path(r"^templates/preview/?$", views.PreviewView.as_view(), name="template-preview"),
    re_path(r"^templates/render/?$", views.RenderView.as_view(), name="template-render"),
    re_path(rf"^templates/{KEY}/?$", views.TemplateDetailView.as_view(), name="template"),
    re_path(
        rf"^templates/{KEY}/versions/?$",
        views.TemplateVersionsView.as_view(),
        name="template-version-create",
    ),
    re_path(
        rf"^templates/{KEY}/rollback/?$",
        views.TemplateRollbackView.as_view(),
        name="template-rollback",
    ),
]
