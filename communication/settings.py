"""Settings, read entirely from the environment (django-environ), with defaults that work unset.

With ``DATABASE_URL`` or ``REDIS_URL`` unset, the embedded servers are started or shared here, before
anything connects (see ``communication.embedded``).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ

from communication import console_nav, embedded, ratelimit

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

APP_ENV = env.str("APP_ENV", default="development")
DEVELOPMENT = APP_ENV == "development"
TESTING = env.bool("TESTING", default=False)

VAR_DIR = embedded.var_dir()
os.environ.setdefault("VAR_DIR", str(VAR_DIR))

# Prometheus metrics are shared by the web, worker and beat processes through files in this folder
# (analytics.metrics). prometheus_client chooses multi-process mode when first imported, and every
# entry point (manage.py, communication.asgi and .server, Celery, pytest-django) loads these settings
# before anything imports it: here is the earliest place all of them share. Children inherit the
# value; `serve` empties the folder when it starts. A test run (pytest sets PYTEST_VERSION) gets a
# folder of its own, so that two runs never add up each other's counters.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = VAR_DIR / "prometheus"
    if os.environ.get("PYTEST_VERSION"):
        _metrics_dir = _metrics_dir / f"pytest-{os.getpid()}"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
PROMETHEUS_MULTIPROC_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)

if any(embedded.wanted()):
    embedded.acquire()

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEVELOPMENT:
        raise environ.ImproperlyConfigured("SECRET_KEY must be set when APP_ENV is not development")
    _secret_file = VAR_DIR / "secret_key"
    if not _secret_file.exists():
        _secret_file.write_text(secrets.token_urlsafe(50))
        _secret_file.chmod(0o600)
    SECRET_KEY = _secret_file.read_text().strip()

# Keys of the encrypted model fields (communication.fields): `id:base64key` (32 bytes), newest
# first; the first encrypts, all decrypt. Unset outside development, an encrypted field refuses
# to work.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
if not FIELD_ENCRYPTION_KEYS and DEVELOPMENT:
    _field_key_file = VAR_DIR / "field_encryption_key"
    if not _field_key_file.exists():
        _field_key_file.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        _field_key_file.chmod(0o600)
    FIELD_ENCRYPTION_KEYS = [_field_key_file.read_text().strip()]

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
# Unset, links and provider callbacks go where `serve` listens (HOST/PORT, a wildcard bind
# being reached on the loopback).
_bind_host = env.str("HOST", default="127.0.0.1")
_link_host = "127.0.0.1" if _bind_host in ("0.0.0.0", "::", "") else _bind_host
if ":" in _link_host and not _link_host.startswith("["):
    _link_host = f"[{_link_host}]"
PUBLIC_BASE_URL: str = env.str(
    "PUBLIC_BASE_URL", default=f"http://{_link_host}:{env.int('PORT', default=8000)}"
).rstrip("/")
ALLOWED_ORIGINS = env.list("ALLOWED_ORIGINS", default=[])

# Our apps; each one's ``urls.py``, where it has one, is mounted at the root (communication.urls).
PROJECT_APPS = [
    "communication",
    "templates_app",
    "notifications",
    "messaging",
    "campaigns",
    "analytics",
]
INSTALLED_APPS = [
    # The staff console's theme (django-unfold); before django.contrib.admin, whose templates it
    # overrides. Its assets are files of the package, served by us: nothing from a CDN.
    "unfold",
    "unfold.contrib.filters",
    "unfold.contrib.forms",
    "unfold.contrib.inlines",
    "unfold.contrib.import_export",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served by us: the docs work offline
    "django_celery_beat",
    "import_export",  # CSV upload of static lists, with per-row errors
    "channels",
    "csp",
    "axes",
    "pgtrigger",  # the audit table refuses UPDATE and DELETE in the database
    *PROJECT_APPS,
]

MIDDLEWARE = [
    # Outermost: times every request, those the middleware below answer included.
    "analytics.middleware.HttpMetricsMiddleware",
    "communication.middleware.RequestIdMiddleware",
    "communication.middleware.DatabaseOutageMiddleware",  # 503 unavailable while it is down
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "communication.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, CSRF, auth and messages middleware, skipped for the bearer-token API.
    "communication.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "communication.middleware.CsrfViewMiddleware",
    "communication.middleware.AuthenticationMiddleware",
    "communication.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # NUL in a query parameter or a path segment: a 400 before any view (bodies: the parsers).
    "communication.api.input.NulRefusalMiddleware",
    # Turns an admin login locked out by django-axes into its 429 page; last, as axes requires.
    "axes.middleware.AxesMiddleware",
]

# Every API path answers with and without a trailing slash (the URL patterns say so); a redirect
# would lose a POST body.
APPEND_SLASH = False

ROOT_URLCONF = "communication.urls"
ASGI_APPLICATION = "communication.asgi.application"
WSGI_APPLICATION = "communication.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The database: DATABASES, its pools, and what an outage does (communication.settings_database).
from communication.settings_database import (  # noqa: E402, F401  (after the embedded servers)
    DATABASES,
    DB_ASYNC_POOL_MAX_SIZE,
    DB_DOWN_HOLD,
    DB_POOL_MAX_SIZE,
    DB_POOL_RECONNECT_TIMEOUT,
    DB_POOL_TIMEOUT,
    DB_UNAVAILABLE_RETRY_AFTER,
    WEB_THREADS,
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "communication.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves the admin's and our static files from the ASGI process; in development straight
# from the apps (no collectstatic needed), in production from STATIC_ROOT (the image collects them).
WHITENOISE_USE_FINDERS = DEVELOPMENT
WHITENOISE_AUTOREFRESH = DEVELOPMENT
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# ---------------------------------------------------------------------------------------- redis

REDIS_URL = env.str("REDIS_URL")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="comm"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "communication.layers.PubSubChannelLayer",
        "CONFIG": {
            # redis-py caps an asyncio pool at 100 connections by default (see DESIGN.md).
            "hosts": [
                {
                    "address": REDIS_URL,
                    "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=2000),
                }
            ],
            "prefix": env.str("CHANNELS_PREFIX", default="comm"),
        },
    }
}

# --------------------------------------------------------------------------------------- celery

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A prefix lets two deployments (or a test's own worker) share one broker without sharing queues.
CELERY_QUEUE_PREFIX = env.str("CELERY_QUEUE_PREFIX", default="")
QUEUE_NAMES = ("realtime", "transactional", "bulk", "default")
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# django-celery-beat's DatabaseScheduler, sending only while it holds a PostgreSQL advisory lock: a
# second beat (two replicas, a rollout's overlap) stands by and takes over when the first dies.
CELERY_BEAT_SCHEDULER = "communication.beat:LeaderScheduler"
# How often a standing-by beat tries to take the lock (the longest a takeover waits, once the
# leader's session has ended).
BEAT_LOCK_RETRY_SECONDS = env.float("BEAT_LOCK_RETRY_SECONDS", default=2.0)
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Worker and beat write a heartbeat to Redis this often; /health/ready reports its age.
HEARTBEAT_INTERVAL = env.int("HEARTBEAT_INTERVAL", default=10)
HEARTBEAT_STALE_AFTER = env.int("HEARTBEAT_STALE_AFTER", default=60)
# /health/ready answers within this many seconds, a check still running then counting as failed.
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)
# Websocket events are kept for replay on reconnect for RETENTION_DAYS["realtime"] (below).

# ------------------------------------------------------------------------------------------ DRF

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "communication.auth.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's parsers, refusing NUL characters (which PostgreSQL cannot store) with a 400.
    "DEFAULT_PARSER_CLASSES": [
        "communication.api.parsers.JSONParser",
        "communication.api.parsers.MultiPartParser",
        "communication.api.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "communication.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["communication.api.throttling.RateLimitThrottle"],
    "DEFAULT_SCHEMA_CLASS": "communication.api.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Communication Service API",
    "DESCRIPTION": "Email, SMS, push and in-app notifications, conversations, templates, campaigns.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "NotificationChannelEnum": "notifications.models.Channel",
        "TemplateChannelEnum": "templates_app.models.Channel",
        "TemplateVersionStatusEnum": "templates_app.models.VersionStatus",
        "SmsEncodingEnum": ["GSM-7", "UCS-2"],
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation's error answers (400/401/403/404/429) in the one error shape.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "communication.api.openapi.add_error_responses",
    ],
}

# ------------------------------------------------------------------------------------- identity

# When IDENTITY_JWKS_URL is set, the identity service's keys replace the development key pair.
IDENTITY_JWKS_URL = env.str("IDENTITY_JWKS_URL", default="")
IDENTITY_ISSUER = env.str(
    "IDENTITY_ISSUER", default="" if IDENTITY_JWKS_URL else "communication-dev"
)
IDENTITY_AUDIENCE = env.str(
    "IDENTITY_AUDIENCE", default="" if IDENTITY_JWKS_URL else "communication"
)
IDENTITY_API_URL = env.str("IDENTITY_API_URL", default="").rstrip("/")
IDENTITY_TOKEN_URL = env.str("IDENTITY_TOKEN_URL", default="")
IDENTITY_CLIENT_ID = env.str("IDENTITY_CLIENT_ID", default="")
IDENTITY_CLIENT_SECRET = env.str("IDENTITY_CLIENT_SECRET", default="")
IDENTITY_TIMEOUT = env.float("IDENTITY_TIMEOUT", default=3.0)
IDENTITY_RETRIES = env.int("IDENTITY_RETRIES", default=2)
IDENTITY_CACHE_SECONDS = env.int("IDENTITY_CACHE_SECONDS", default=3600)
JWT_ALGORITHMS = env.list("JWT_ALGORITHMS", default=["RS256", "ES256"])
JWT_LEEWAY_SECONDS = env.int("JWT_LEEWAY_SECONDS", default=30)
JWKS_CACHE_SECONDS = env.int("JWKS_CACHE_SECONDS", default=3600)
JWKS_MIN_REFRESH_INTERVAL = env.int("JWKS_MIN_REFRESH_INTERVAL", default=60)
# Development key pair and JWKS (APP_ENV=development and no IDENTITY_JWKS_URL).
DEV_SIGNING_KEY_PATH = VAR_DIR / "dev_jwt_key.pem"

# ------------------------------------------------------------------------------------------ web

CORS_ALLOWED_ORIGINS = ALLOWED_ORIGINS
CORS_EXPOSE_HEADERS = ["X-Request-Id", "Idempotent-Replay"]
CSRF_TRUSTED_ORIGINS = ALLOWED_ORIGINS
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if not DEVELOPMENT else None

# Content-Security-Policy (django-csp 4) on every response. Every script is a file of our own or of
# the admin, Swagger UI (its split view) and ReDoc (drf-spectacular-sidecar): no inline script.
# Inline styles stay allowed: the admin's templates, the unsubscribe page, Swagger UI's style
# attributes and ReDoc's styled-components all write them. ReDoc starts a blob: worker; the push
# page registers its service worker from /static/.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# The staff console (/admin/) runs unfold's Alpine.js, which compiles its x-* attributes with
# new Function(): that path alone adds 'unsafe-eval' to the policy above (communication.middleware).
CONTENT_SECURITY_POLICY_ADMIN_UPDATE = {"script-src": ["'unsafe-eval'"]}
# HSTS on HTTPS responses (behind TLS, SECURE_PROXY_SSL_HEADER tells which those are): a year in
# production, off elsewhere, where a browser would remember it for localhost.
SECURE_HSTS_SECONDS = env.int(
    "SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if APP_ENV == "production" else 0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# Admin login throttling (django-axes): AXES_FAILURE_LIMIT failed logins for one username from one
# IP lock that pair out (429) for AXES_COOLOFF_MINUTES; a successful login resets the count. The
# attempts are rows (AccessAttempt), listed and cleared in the admin.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="noreply@localhost")

DEV_ADMIN_USERNAME = env.str("DEV_ADMIN_USERNAME", default="admin")

# ---------------------------------------------------------------------------------- rate limits

# HTTP: "<group>=<count>/<unit>,…" (groups send, write, read, upload; a group left out keeps its
# default, communication.ratelimit.DEFAULTS) or "off". Parsed here so a bad value stops the start.
RATE_LIMITS = env.str("RATE_LIMITS", default="")
try:
    ratelimit.parse_limits(RATE_LIMITS)
except ValueError as _exc:
    raise environ.ImproperlyConfigured(str(_exc)) from _exc
# Proxies in front of the service: the client's address is the X-Forwarded-For entry the
# outermost of them appended (0: the peer's address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Websocket, per connection: every frame kind has a token bucket of MESSAGING_WS_BURST frames
# refilled at MESSAGING_WS_RATE a second, except "resume" (it replays up to a thousand events),
# allowed WS_RESUME_PER_MINUTE times a minute.
MESSAGING_WS_RATE = env.float("MESSAGING_WS_RATE", default=10.0)
MESSAGING_WS_BURST = env.int("MESSAGING_WS_BURST", default=30)
WS_RESUME_PER_MINUTE = env.int("WS_RESUME_PER_MINUTE", default=5)
# Seconds an event may wait to be written to a socket whose client stopped reading (its buffers
# full) before the gateway lets that socket go; the client reconnects and resumes.
WS_SEND_TIMEOUT = env.float("WS_SEND_TIMEOUT", default=10.0)

# -------------------------------------------------------------------------------------- logging

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "communication.logging.RequestIdFilter"},
        "redact": {"()": "communication.logging.RedactTokensFilter"},
    },
    "formatters": {
        "json": {"()": "communication.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "uvicorn.access": {"level": "WARNING"},
    },
}

# ------------------------------------------------------------------------------------ templates

# Caps on one render (templates_app.engine.Limits); each a clear error when exceeded.
TEMPLATES_SMS_MAX_SEGMENTS = env.int("TEMPLATES_SMS_MAX_SEGMENTS", default=10)
TEMPLATES_TIME_LIMIT = env.float("TEMPLATES_TIME_LIMIT", default=1.0)
TEMPLATES_MAX_OUTPUT = env.int("TEMPLATES_MAX_OUTPUT", default=512 * 1024)
TEMPLATES_MAX_RANGE = env.int("TEMPLATES_MAX_RANGE", default=10_000)
TEMPLATES_MAX_ITERATIONS = env.int("TEMPLATES_MAX_ITERATIONS", default=100_000)
TEMPLATES_MAX_INT_BITS = env.int("TEMPLATES_MAX_INT_BITS", default=4096)
TEMPLATES_MAX_WIDTH = env.int("TEMPLATES_MAX_WIDTH", default=1_000)
TEMPLATES_MAX_ITEMS = env.int("TEMPLATES_MAX_ITEMS", default=10_000)
# Renders run on threads of their own; beyond threads + queue a render is refused (503
# render_busy). Keep the sum below WEB_THREADS so renders can never hold every request thread.
TEMPLATES_RENDER_THREADS = env.int("TEMPLATES_RENDER_THREADS", default=2)
TEMPLATES_RENDER_QUEUE = env.int("TEMPLATES_RENDER_QUEUE", default=2)

# -------------------------------------------------------------------------------- notifications

# Ordered provider chains per channel; a provider without credentials is left out of its chain, and
# a channel with none delivers to the development outbox (listed at /api/v1/outbox and in the admin).
EMAIL_PROVIDERS: list[str] = env.list("EMAIL_PROVIDERS", default=["sendgrid", "mailgun", "smtp"])
SMS_PROVIDERS: list[str] = env.list("SMS_PROVIDERS", default=["twilio", "ovh"])
PUSH_PROVIDERS: list[str] = env.list("PUSH_PROVIDERS", default=["fcm", "webpush"])
NOTIFICATION_PROVIDERS: dict[str, dict[str, Any]] = {
    "sendgrid": {
        "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
        "OPTIONS": {
            "API_KEY": env.str("SENDGRID_API_KEY", default=""),
            "API_URL": env.str("SENDGRID_API_URL", default="https://api.sendgrid.com/v3/"),
            "WEBHOOK_VERIFICATION_KEY": env.str("SENDGRID_WEBHOOK_VERIFICATION_KEY", default=""),
            "RATE_PER_SECOND": env.float("SENDGRID_RATE_PER_SECOND", default=0),
        },
    },
    "mailgun": {
        "BACKEND": "notifications.providers.mailgun.MailgunEmailProvider",
        "OPTIONS": {
            "API_KEY": env.str("MAILGUN_API_KEY", default=""),
            "SENDER_DOMAIN": env.str("MAILGUN_SENDER_DOMAIN", default=""),
            "API_URL": env.str("MAILGUN_API_URL", default="https://api.mailgun.net/v3"),
            "WEBHOOK_SIGNING_KEY": env.str("MAILGUN_WEBHOOK_SIGNING_KEY", default=""),
            "RATE_PER_SECOND": env.float("MAILGUN_RATE_PER_SECOND", default=0),
        },
    },
    "smtp": {
        "BACKEND": "notifications.providers.smtp.SmtpEmailProvider",
        "OPTIONS": {"URL": env.str("SMTP_URL", default="")},
    },
    "twilio": {
        "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
        "OPTIONS": {
            "ACCOUNT_SID": env.str("TWILIO_ACCOUNT_SID", default=""),
            "AUTH_TOKEN": env.str("TWILIO_AUTH_TOKEN", default=""),
            "FROM": env.str("TWILIO_FROM", default=""),
            "API_URL": env.str("TWILIO_API_URL", default="https://api.twilio.com"),
            "RATE_PER_SECOND": env.float("TWILIO_RATE_PER_SECOND", default=0),
        },
    },
    "ovh": {
        "BACKEND": "notifications.providers.ovh_sms.OvhSmsProvider",
        "OPTIONS": {
            "API_URL": env.str("OVH_API_URL", default="https://eu.api.ovh.com/1.0"),
            "APPLICATION_KEY": env.str("OVH_APPLICATION_KEY", default=""),
            "APPLICATION_SECRET": env.str("OVH_APPLICATION_SECRET", default=""),
            "CONSUMER_KEY": env.str("OVH_CONSUMER_KEY", default=""),
            "SMS_SERVICE": env.str("OVH_SMS_SERVICE", default=""),
            "SENDER": env.str("OVH_SENDER", default=""),
            "RATE_PER_SECOND": env.float("OVH_RATE_PER_SECOND", default=0),
        },
    },
    # Push: one channel; FCM serves the ios/android devices, Web Push the browsers (not failover).
    "fcm": {
        "BACKEND": "notifications.providers.fcm.FcmPushProvider",
        "OPTIONS": {
            # A service-account JSON file path or its content; without it FCM sends go to the
            # development outbox.
            "CREDENTIALS": env.str("FCM_CREDENTIALS", default=""),
            "API_URL": env.str("FCM_API_URL", default=""),
            "ANDROID_CHANNEL_ID": env.str("FCM_ANDROID_CHANNEL_ID", default=""),
            "RATE_PER_SECOND": env.float("FCM_RATE_PER_SECOND", default=0),
        },
    },
    "webpush": {
        "BACKEND": "notifications.providers.webpush.WebPushProvider",
        "OPTIONS": {
            "VAPID_PRIVATE_KEY": env.str("VAPID_PRIVATE_KEY", default=""),
            "VAPID_PUBLIC_KEY": env.str("VAPID_PUBLIC_KEY", default=""),
            "VAPID_SUBJECT": env.str("VAPID_SUBJECT", default=""),
            "TTL": env.int("WEBPUSH_TTL", default=86400),
        },
    },
}
# Web Push endpoints must be on a known push service outside development (comma-separated hosts
# replace the built-in list).
WEBPUSH_ENDPOINT_HOSTS = env.list("WEBPUSH_ENDPOINT_HOSTS", default=[])
# Whether an "ambiguous" delivery (the provider may have received it) is sent again.
RESEND_AMBIGUOUS = {"email": True, "in_app": True, "push": True, "sms": False}
DELIVERY_LEASE_SECONDS = env.int("DELIVERY_LEASE_SECONDS", default=60)
# A delivery whose worker died during its send this many times is dead-lettered, not tried
# again (a "poison" message that kills every worker that takes it).
DELIVERY_MAX_CRASHES = env.int("DELIVERY_MAX_CRASHES", default=3)
# A queued delivery nobody claimed for this long is published again (its message was lost, or
# its process died before publishing); younger backlog is left to wait its turn.
DELIVERY_REPUBLISH_SECONDS = env.int("DELIVERY_REPUBLISH_SECONDS", default=300)
# Whether each provider call's record waits for PostgreSQL's disk flush (see
# notifications.services.outcomes.deliveries_record_sent): on, a crash of PostgreSQL itself
# repeats nothing unflagged, at the cost of one flush per provider call.
DELIVERY_RECORD_SYNCHRONOUS_COMMIT = env.bool("DELIVERY_RECORD_SYNCHRONOUS_COMMIT", default=False)
DELIVERY_MAX_ATTEMPTS_PER_PROVIDER = env.int("DELIVERY_MAX_ATTEMPTS_PER_PROVIDER", default=3)
DELIVERY_RETRY_BASE_SECONDS = env.float("DELIVERY_RETRY_BASE_SECONDS", default=2.0)
# A high or urgent delivery failing on a provider is on the next one within
# DELIVERY_URGENT_FAILOVER_SECONDS: it waits at most DELIVERY_URGENT_RETRY_MAX_SECONDS between its
# retries, and a failure past the difference of the two fails over.
DELIVERY_URGENT_FAILOVER_SECONDS = env.float("DELIVERY_URGENT_FAILOVER_SECONDS", default=60.0)
DELIVERY_URGENT_RETRY_MAX_SECONDS = env.float("DELIVERY_URGENT_RETRY_MAX_SECONDS", default=15.0)
# How long a process gathers committed deliveries into one broker message (notifications.enqueue).
DELIVERY_ENQUEUE_LINGER_MS = env.int("DELIVERY_ENQUEUE_LINGER_MS", default=100)
# The send API's admission control (notifications.services.admission): a send is refused with 503
# ``overloaded`` while its priority class has more queued deliveries than its bound (0: no bound).
# Each web process reads the backlog at most every SEND_BACKLOG_REFRESH_SECONDS.
SEND_BACKLOG_MAX_REALTIME = env.int("SEND_BACKLOG_MAX_REALTIME", default=1_000)
SEND_BACKLOG_MAX_TRANSACTIONAL = env.int("SEND_BACKLOG_MAX_TRANSACTIONAL", default=10_000)
SEND_BACKLOG_MAX_BULK = env.int("SEND_BACKLOG_MAX_BULK", default=20_000)
SEND_BACKLOG_REFRESH_SECONDS = env.float("SEND_BACKLOG_REFRESH_SECONDS", default=1.0)
SEND_OVERLOADED_RETRY_AFTER = env.int("SEND_OVERLOADED_RETRY_AFTER", default=5)
PROVIDER_BREAKER_THRESHOLD = env.int("PROVIDER_BREAKER_THRESHOLD", default=5)
PROVIDER_BREAKER_RESET_SECONDS = env.int("PROVIDER_BREAKER_RESET_SECONDS", default=30)
IDEMPOTENCY_TTL_HOURS = 24
# A key still "in flight" after this long belongs to a request whose process died (a crash
# between the key's claim and the send's commit): a retry with the key takes it over instead of
# getting 409 until the key expires. Far longer than any request runs.
IDEMPOTENCY_IN_FLIGHT_SECONDS = env.int("IDEMPOTENCY_IN_FLIGHT_SECONDS", default=300)
NOTIFICATIONS_MAX_RECIPIENTS = 1000
# Digests (notifications.services.digests): the items one digest lists (the rest are counted,
# "and N more"), and the held deliveries one digest gathers at most (more go in the next one).
DIGEST_MAX_ITEMS = env.int("DIGEST_MAX_ITEMS", default=20)
DIGEST_MAX_GATHERED = env.int("DIGEST_MAX_GATHERED", default=1000)
# A send's escalation: how late its last step may be (a pending step waits in the database).
NOTIFICATIONS_ESCALATION_MAX_SECONDS = env.int(
    "NOTIFICATIONS_ESCALATION_MAX_SECONDS", default=7 * 24 * 3600
)
# POST /api/v1/notifications/bulk: recipients per request, and per fan-out transaction.
BULK_MAX_RECIPIENTS = 10_000
BULK_FANOUT_BATCH = env.int("BULK_FANOUT_BATCH", default=500)
SMS_DEFAULT_REGION = env.str("SMS_DEFAULT_REGION", default="")

# Outbound webhooks (notifications.services.webhooks). Endpoints on private, loopback,
# link-local … addresses are refused unless WEBHOOKS_ALLOW_PRIVATE (development, tests).
WEBHOOKS_ALLOW_PRIVATE = env.bool("WEBHOOKS_ALLOW_PRIVATE", default=False)
# Seconds between a message's attempts (jittered ±20%); after the last one it is dead. The
# default spreads eight attempts over about 24 h (Standard Webhooks' schedule, trimmed).
WEBHOOKS_RETRY_SCHEDULE = [
    float(s)
    for s in env.list(
        "WEBHOOKS_RETRY_SCHEDULE", default=["5", "300", "1800", "7200", "18000", "36000", "22000"]
    )
]
# Consecutive failed attempts after which an endpoint is disabled (with a notice).
WEBHOOKS_DISABLE_AFTER_FAILURES = env.int("WEBHOOKS_DISABLE_AFTER_FAILURES", default=50)
WEBHOOKS_TIMEOUT_SECONDS = env.float("WEBHOOKS_TIMEOUT_SECONDS", default=5.0)
WEBHOOKS_LEASE_SECONDS = env.int("WEBHOOKS_LEASE_SECONDS", default=60)
# How long the previous secret still signs after a rotation.
WEBHOOKS_SECRET_OVERLAP_SECONDS = env.int("WEBHOOKS_SECRET_OVERLAP_SECONDS", default=86400)
# Delivered and dead messages (and their attempts) are kept this long in the delivery log.
WEBHOOKS_LOG_RETENTION_DAYS = env.int("WEBHOOKS_LOG_RETENTION_DAYS", default=30)

# --------------------------------------------------------------------------------- staff console

# django-unfold's configuration; the sidebar (pages grouped by what staff do) is
# communication.console_nav.
UNFOLD = {
    "SITE_TITLE": "Communication Service",
    "SITE_HEADER": "Communication Service",
    "SITE_SUBHEADER": "Staff console",
    "SITE_SYMBOL": "forum",
    "SITE_FAVICONS": console_nav.FAVICONS,
    # "View site": the API's documentation, the service's only public page.
    "SITE_URL": "/api/docs",
    "SHOW_VIEW_ON_SITE": False,
    "DASHBOARD_CALLBACK": "communication.console.dashboard",
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": False,
        "navigation": console_nav.NAVIGATION,
    },
}

# The console is the only thing staff log in to: after login, its home page.
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/admin/"

# ------------------------------------------------------------------------------------ campaigns

# Scheduling a campaign whose audience (counted then) is larger than this needs another staff
# member's approval.
CAMPAIGN_APPROVAL_THRESHOLD = env.int("CAMPAIGN_APPROVAL_THRESHOLD", default=1000)
# Recipients written per fan-out transaction; pause, resume and cancel act between batches.
CAMPAIGN_BATCH_SIZE = env.int("CAMPAIGN_BATCH_SIZE", default=500)
# The reputation guardrail: a campaign pauses itself when the hard-bounce or complaint rate of
# its last CAMPAIGN_GUARDRAIL_WINDOW deliveries passes these (once CAMPAIGN_GUARDRAIL_MIN have an
# outcome); below the 5 % / 0.1 % at which Amazon SES reviews an account.
CAMPAIGN_GUARDRAIL_WINDOW = 1000
CAMPAIGN_GUARDRAIL_MIN = 200
CAMPAIGN_GUARDRAIL_BOUNCE_RATE = env.float("CAMPAIGN_GUARDRAIL_BOUNCE_RATE", default=0.04)
CAMPAIGN_GUARDRAIL_COMPLAINT_RATE = env.float("CAMPAIGN_GUARDRAIL_COMPLAINT_RATE", default=0.0008)

# ------------------------------------------------------------------------------------ analytics

# The event table is partitioned by month of occurred_at (analytics.partitions): a beat task keeps
# ANALYTICS_PARTITIONS_AHEAD months ready; the retention run detaches (then drops) the partitions
# wholly older than RETENTION_DAYS["events"] (below); rollups are kept for
# ANALYTICS_ROLLUP_RETENTION_DAYS.
ANALYTICS_PARTITIONS_AHEAD = env.int("ANALYTICS_PARTITIONS_AHEAD", default=3)
ANALYTICS_ROLLUP_RETENTION_DAYS = env.int("ANALYTICS_ROLLUP_RETENTION_DAYS", default=800)
# Open pixels and click links stop being recorded this long after the send.
TRACKING_TOKEN_MAX_AGE_DAYS = env.int("TRACKING_TOKEN_MAX_AGE_DAYS", default=90)
# Per-message prices (JSON), by provider alias then channel: a number, or for SMS an object of
# destination prefixes ("+33", "+1", "*" for the rest) whose price counts per segment, e.g.
# {"twilio": {"sms": {"+33": 0.07, "*": 0.05}}, "sendgrid": {"email": 0.0004}}.
PROVIDER_PRICES: dict = env.json("PROVIDER_PRICES", default={})
COST_CURRENCY = env.str("COST_CURRENCY", default="EUR")
# /metrics answers a request bearing METRICS_TOKEN or coming from METRICS_ALLOWED_IPS (addresses
# or networks); with neither set, nobody.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
# Checked here, so that a mistyped network stops the start rather than locking the scraper out.
try:
    for _network in METRICS_ALLOWED_IPS:
        ipaddress.ip_network(_network.strip(), strict=False)
except ValueError as _exc:
    raise environ.ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {_exc}") from _exc

# ----------------------------------------------------------------------------------- compliance

# Days each kind of personal data is kept; 0 keeps it forever. communication.compliance's
# registry maps every model holding personal data to one of these kinds; the retention run
# (communication.compliance.retention, hourly) removes what is older. The events' and the
# realtime log's older settings are still read when the new name is not set.
RETENTION_DAYS = {
    kind: env.int(f"RETENTION_{kind.upper()}_DAYS", default=default)
    for kind, default in {
        "notifications": 365,
        "deliveries": 365,
        "events": env.int("ANALYTICS_EVENT_RETENTION_DAYS", default=400),
        "messages": 0,
        "attachments": 0,
        "outbox": 30,
        "provider_payloads": 90,
        "realtime": env.int("REALTIME_EVENT_RETENTION_DAYS", default=7),
        "audit": 730,
    }.items()
}
# The key of every keyed-hash lookup column (communication.compliance.keyed): suppressions,
# device tokens, addresses beside their encrypted column; an erased address survives only as its
# hash, so it is still never mailed. Never rotated with the encryption keys: an erased address
# cannot be hashed again under a new one. SUPPRESSION_HASH_KEY is its former name.
LOOKUP_HASH_KEY = (
    env.str("LOOKUP_HASH_KEY", default="")
    or env.str("SUPPRESSION_HASH_KEY", default="")
    or SECRET_KEY
)
SUPPRESSION_HASH_KEY = LOOKUP_HASH_KEY
# An erasure that finds more rows than this runs on the worker and answers 202 with a status URL.
ERASURE_SYNC_MAX_ROWS = env.int("ERASURE_SYNC_MAX_ROWS", default=5000)
