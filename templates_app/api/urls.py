"""Order matters: ``templates/versions`` comes before ``templates/<key>``, and the router puts a
viewset's reserved words (categories, preview, render) before its ``<key>`` route."""

from communication.api.routers import OptionalSlashRouter
from templates_app.api import views

router = OptionalSlashRouter()
router.register("templates/versions", views.VersionViewSet, basename="template-version")
router.register("templates", views.TemplateViewSet, basename="template")

urlpatterns = router.urls
