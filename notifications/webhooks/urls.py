"""Provider webhooks (filled in with the provider modules)."""

urlpatterns: list = []
