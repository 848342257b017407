"""Who may do what with templates: a service with one of these scopes, or a staff user
(``communication.auth.permissions.ScopeOrStaff``)."""

MANAGE = ("templates:manage",)
RENDER = ("templates:render", "notifications:send")
READ = ("templates:read", "templates:manage", "templates:render", "notifications:send")
