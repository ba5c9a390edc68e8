"""Django settings, all from the environment (see README "Configuration").

With DATABASE_URL / REDIS_URL unset the platform runs on its embedded default:
PostgreSQL and Redis started (or reused) under var/.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from csp.constants import NONE, SELF, UNSAFE_HASHES, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from django_guid.integrations import CeleryIntegration

from switchboard import embedded
from switchboard.env import env_bool, env_int, env_list, env_str
from switchboard.observability.logs import logging_config

BASE_DIR = embedded.REPO_ROOT


def _secret_from_var(name: str, make: str) -> str:
    """Dev-only: a secret generated once and kept under var/ (gitignored)."""
    path: Path = embedded.var_dir() / name
    if not path.exists():
        path.write_text(make)
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or _secret_from_var("secret_key", secrets.token_urlsafe(50))
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Fernet keys, comma-separated; the first encrypts, all decrypt (key rotation).
SWITCHBOARD_ENCRYPTION_KEYS = env_list(
    "SWITCHBOARD_ENCRYPTION_KEY",
    [_secret_from_var("encryption_key", Fernet.generate_key().decode())],
)

DATABASE_URL = env_str("DATABASE_URL") or embedded.ensure_postgres()
REDIS_URL = env_str("REDIS_URL") or embedded.ensure_redis()
SWITCHBOARD_EMBEDDED = not (env_str("DATABASE_URL") and env_str("REDIS_URL"))

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    # The admin, with the console's two-factor check (switchboard/console/admin_site.py).
    "switchboard.console.admin_site.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "switchboard.core",
    "switchboard.tenants",
    "switchboard.bots",
    "switchboard.conversations",
    "switchboard.pool",
    "switchboard.hooks",
    "switchboard.licensing",
    "switchboard.metering",
    "switchboard.console",
    "switchboard.apikeys",
    "switchboard.api",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI's files, served from here: the docs page works air-gapped.
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "auditlog",
    # Observability (README "Observability"). django-guid before switchboard.observability:
    # its task signal must set the request id before ours logs the task.
    "django_guid",
    "django_prometheus",
    "csp",
    "switchboard.observability",
]

MIDDLEWARE = [
    # Observability first: HTTP metrics see every request, and the request id is set
    # before anything logs (the access log line included).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_guid.middleware.guid_middleware",
    "switchboard.observability.middleware.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "switchboard.console.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # Outside axes, so a lockout's answer is counted by status too.
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as its documentation asks: it answers locked-out logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Counts failed logins and locks out (username, address) pairs: login throttling.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SWITCHBOARD_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("SWITCHBOARD_LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "console/locked_out.html"

LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:overview"
LOGOUT_REDIRECT_URL = "console:login"
OTP_TOTP_ISSUER = "Switchboard"

ROOT_URLCONF = "switchboard.urls"
WSGI_APPLICATION = "switchboard.wsgi.application"
ASGI_APPLICATION = "switchboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "switchboard.console.access.console_context",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or embedded.var_dir() / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serving from the finders avoids a collectstatic step on the embedded default;
# production images run collectstatic and turn this off.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = embedded.celery_broker_url(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
SWITCHBOARD_HEALTH_INTERVAL_S = env_int("SWITCHBOARD_HEALTH_INTERVAL_S", 10)
CELERY_BEAT_SCHEDULE = {
    "pool-health-check": {
        "task": "switchboard.pool.tasks.pool_health_check",
        "schedule": float(SWITCHBOARD_HEALTH_INTERVAL_S),
        # A check older than the next one is worthless.
        "options": {"queue": "default", "expires": float(SWITCHBOARD_HEALTH_INTERVAL_S)},
    },
    "requeue-stalled-messages": {
        "task": "switchboard.conversations.tasks.requeue_stalled_messages",
        "schedule": 60.0,
        "options": {"queue": "default"},
    },
    "usage-rollups": {
        "task": "switchboard.metering.tasks.usage_rollups_update",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 60.0},
    },
    "alerts-deliver": {
        "task": "switchboard.metering.tasks.alerts_deliver_pending",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 60.0},
    },
    # The retention policy (SWITCHBOARD_RETENTION_DAYS; off by default).
    "prune-conversations": {
        "task": "switchboard.core.tasks.prune_conversations",
        "schedule": 24 * 3600.0,
        "options": {"queue": "default", "expires": 3600.0},
    },
}

# --- Switchboard ------------------------------------------------------------------------
# Inbound webhook bodies above this many bytes are refused with 413 before being read.
SWITCHBOARD_WEBHOOK_MAX_BYTES = env_int("SWITCHBOARD_WEBHOOK_MAX_BYTES", 64 * 1024)
# Outbound callbacks: seconds per attempt, and how many retries (exponential backoff).
SWITCHBOARD_CALLBACK_TIMEOUT_S = env_int("SWITCHBOARD_CALLBACK_TIMEOUT_S", 15)
# "standard": the Standard Webhooks schedule (5 s ... 24 h, about three days in all);
# "exponential": the backoff below (quick, for development and tests).
SWITCHBOARD_WEBHOOK_RETRY = env_str("SWITCHBOARD_WEBHOOK_RETRY", "standard")
# Operator switch: let every connector call back to loopback/private addresses.
SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS = env_bool("SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS", False)
# Permanent delivery failures in a row after which a connector is disabled.
SWITCHBOARD_CONNECTOR_DISABLE_AFTER = env_int("SWITCHBOARD_CONNECTOR_DISABLE_AFTER", 5)
# DingTalk: where its APIs live (tests point these at local fakes).
SWITCHBOARD_DINGTALK_API_BASE = env_str("SWITCHBOARD_DINGTALK_API_BASE", "https://api.dingtalk.com")
SWITCHBOARD_DINGTALK_SESSION_WEBHOOK_PREFIXES = env_list(
    "SWITCHBOARD_DINGTALK_SESSION_WEBHOOK_PREFIXES", ["https://oapi.dingtalk.com/"]
)
SWITCHBOARD_DINGTALK_PACE_MS = env_int("SWITCHBOARD_DINGTALK_PACE_MS", 1000)
SWITCHBOARD_DINGTALK_STREAM_REFRESH_S = env_int("SWITCHBOARD_DINGTALK_STREAM_REFRESH_S", 10)
SWITCHBOARD_ALIGENIE_MAX_BYTES = env_int("SWITCHBOARD_ALIGENIE_MAX_BYTES", 64 * 1024)
SWITCHBOARD_CALLBACK_MAX_RETRIES = env_int("SWITCHBOARD_CALLBACK_MAX_RETRIES", 8)
SWITCHBOARD_CALLBACK_BACKOFF_BASE_S = env_int("SWITCHBOARD_CALLBACK_BACKOFF_BASE_S", 5)
SWITCHBOARD_CALLBACK_BACKOFF_MAX_S = env_int("SWITCHBOARD_CALLBACK_BACKOFF_MAX_S", 3600)
# A received message with no reply after this long is re-enqueued by the beat sweeper.
SWITCHBOARD_STALLED_AFTER_S = env_int("SWITCHBOARD_STALLED_AFTER_S", 120)
# Inference deadlines (seconds).
SWITCHBOARD_INFERENCE_CONNECT_S = env_int("SWITCHBOARD_INFERENCE_CONNECT_S", 2)
SWITCHBOARD_INFERENCE_FIRST_TOKEN_S = env_int("SWITCHBOARD_INFERENCE_FIRST_TOKEN_S", 30)
SWITCHBOARD_INFERENCE_TOTAL_S = env_int("SWITCHBOARD_INFERENCE_TOTAL_S", 120)
# GPU pool routing (see README "GPU pool").
SWITCHBOARD_ROUTING_STRATEGY = env_str("SWITCHBOARD_ROUTING_STRATEGY", "session_affinity")
SWITCHBOARD_POOL_MAX_QUEUE = env_int("SWITCHBOARD_POOL_MAX_QUEUE", 1024)
SWITCHBOARD_POOL_REFRESH_S = env_int("SWITCHBOARD_POOL_REFRESH_S", 5)
SWITCHBOARD_HEALTH_TIMEOUT_S = env_int("SWITCHBOARD_HEALTH_TIMEOUT_S", 2)

# Tenant API (see README "Tenant API").
# Threads of a web process answering the OpenAI-compatible endpoint; each holds one
# database connection while it lives.
SWITCHBOARD_API_THREADS = env_int("SWITCHBOARD_API_THREADS", 32)
SWITCHBOARD_API_MAX_BODY_BYTES = env_int("SWITCHBOARD_API_MAX_BODY_BYTES", 1024 * 1024)
# How long a web process trusts an API key or a bot it looked up for the OpenAI-compatible
# endpoint: a revoked key or a changed bot takes effect within this many seconds.
SWITCHBOARD_API_KEY_CACHE_S = env_int("SWITCHBOARD_API_KEY_CACHE_S", 2)
# Requests per API key per minute on /api/v1/ (messages sent are also under the
# licence's rate limits).
SWITCHBOARD_API_RATE = env_str("SWITCHBOARD_API_RATE", "600/min")
# The longest a synchronous send may wait for its reply.
SWITCHBOARD_API_SYNC_TIMEOUT_MAX_S = env_int("SWITCHBOARD_API_SYNC_TIMEOUT_MAX_S", 120)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["switchboard.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["switchboard.api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["switchboard.api.auth.ApiKeyThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": SWITCHBOARD_API_RATE},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "switchboard.api.pagination.Cursor",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "switchboard.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard tenant API",
    "DESCRIPTION": "Bots, connectors, conversations, messages, usage, MAU and licence "
    "status of one tenant, authenticated by the tenant's API key "
    "(`Authorization: Bearer sb_…`). The OpenAI-compatible endpoint lives at `/v1/`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
}

# Licensing and metering (see README "Licences and metering").
# Ed25519 public keys (base64 of the 32 raw bytes) whose licences are accepted; the
# operator's `licence_keygen` prints one.
SWITCHBOARD_LICENCE_PUBLIC_KEYS = env_list("SWITCHBOARD_LICENCE_PUBLIC_KEYS", [])
# A tenant without a valid licence gets these limits (None: unlimited).
SWITCHBOARD_FREE_TIER = {
    "mau_limit": env_int("SWITCHBOARD_FREE_MAU", 100),
    "monthly_tokens": env_int("SWITCHBOARD_FREE_MONTHLY_TOKENS", 2_000_000),
    "tenant_messages_per_minute": env_int("SWITCHBOARD_FREE_TENANT_PER_MINUTE", 120),
    "user_messages_per_minute": env_int("SWITCHBOARD_FREE_USER_PER_MINUTE", 30),
    "connector_kinds": None,
    "max_bots": env_int("SWITCHBOARD_FREE_MAX_BOTS", 5),
    "enforcement": "hard",
}
# How long a worker or web process trusts the limits it loaded for a tenant; a newly
# imported licence is in force everywhere after at most this long.
SWITCHBOARD_LIMITS_CACHE_S = env_int("SWITCHBOARD_LIMITS_CACHE_S", 10)
# Installation-wide alerts (model licence thresholds) go here, signed with the secret.
SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_URL = env_str("SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_URL", "")
SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_SECRET = env_str("SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_SECRET", "")
# Rollups only take ledger rows older than this, so a transaction that committed late
# with a lower id is never skipped.
SWITCHBOARD_ROLLUP_LAG_S = env_int("SWITCHBOARD_ROLLUP_LAG_S", 30)

# --- Operations: readiness and retention (see docker/README.md) -------------------------
# /readyz counts an endpoint healthy only if the health task said so at most this long
# ago: a stopped beat must not leave the pool looking healthy forever.
SWITCHBOARD_READYZ_HEALTH_MAX_AGE_S = env_int(
    "SWITCHBOARD_READYZ_HEALTH_MAX_AGE_S", 3 * SWITCHBOARD_HEALTH_INTERVAL_S + 10
)
# Seconds each /readyz dependency check may take.
SWITCHBOARD_READYZ_TIMEOUT_S = env_int("SWITCHBOARD_READYZ_TIMEOUT_S", 2)
# `prune_conversations`: conversations idle longer than this many days are deleted (0:
# keep forever). Per-tenant values, "slug=days,slug=days", override it (0: keep that
# tenant's forever). The usage ledger and MAU records are never pruned.
SWITCHBOARD_RETENTION_DAYS = env_int("SWITCHBOARD_RETENTION_DAYS", 0)
SWITCHBOARD_RETENTION_DAYS_BY_TENANT = env_list("SWITCHBOARD_RETENTION_DAYS_BY_TENANT", [])

# --- Observability (README "Observability") ----------------------------------------------
# "plain" lines for people (the default), "json" lines for a log shipper.
SWITCHBOARD_LOG_FORMAT = env_str("SWITCHBOARD_LOG_FORMAT", "plain")
LOGGING = logging_config(fmt=SWITCHBOARD_LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# One line per HTTP request with its request id. On by default with JSON logs; in
# development uvicorn's own access log says the same.
SWITCHBOARD_ACCESS_LOG = env_bool("SWITCHBOARD_ACCESS_LOG", SWITCHBOARD_LOG_FORMAT == "json")
DJANGO_GUID = {
    # The de facto header of proxies and load balancers. An id that is not a UUID (a
    # client's free text, bound for every log line) is replaced by a fresh one.
    "GUID_HEADER_NAME": "X-Request-ID",
    "VALIDATE_GUID": True,
    "RETURN_HEADER": True,
    "EXPOSE_HEADER": False,
    # Task messages carry the id in their headers, so worker lines show the request that
    # caused them; Celery workers log through LOGGING (same format, same request id).
    "INTEGRATIONS": [CeleryIntegration(use_django_logging=True)],
}
# /metrics: a bearer token, allowed client networks (CIDR, comma-separated), or both;
# with neither, metrics are off.
SWITCHBOARD_METRICS_TOKEN = env_str("SWITCHBOARD_METRICS_TOKEN", "") or ""
SWITCHBOARD_METRICS_ALLOWED_NETWORKS = env_list("SWITCHBOARD_METRICS_ALLOWED_NETWORKS", [])

# --- Production mode (README "Observability" and "Configuration") -----------------------
# DEBUG is off by default already; "production" adds what only works behind TLS. The
# default, "development", serves plain HTTP on 127.0.0.1, where secure cookies and an
# HTTPS redirect would lock everyone out.
SWITCHBOARD_ENV = env_str("SWITCHBOARD_ENV", "development")
if SWITCHBOARD_ENV not in ("development", "production"):
    raise ImproperlyConfigured(f"SWITCHBOARD_ENV={SWITCHBOARD_ENV!r}: development or production")
SWITCHBOARD_PRODUCTION = SWITCHBOARD_ENV == "production"
if SWITCHBOARD_PRODUCTION:
    if not env_str("SECRET_KEY"):
        # The var/ fallback is one host's: replicas would not accept each other's
        # sessions and signatures.
        raise ImproperlyConfigured("SWITCHBOARD_ENV=production needs SECRET_KEY (or _FILE)")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SWITCHBOARD_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SWITCHBOARD_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SWITCHBOARD_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SWITCHBOARD_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # security.W021 asks for the HSTS preload directive. It only means something once
        # the registrable domain is submitted to the browsers' preload list, which binds
        # every subdomain of it to HTTPS for good: that is the domain owner's decision,
        # not a default of an app installed on one of its hosts. Opt in with
        # SWITCHBOARD_HSTS_PRELOAD=true.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Behind a proxy that terminates TLS, Django sees plain HTTP; trust the proxy's
# X-Forwarded-Proto only when told to, since clients can send that header too (the
# proxy must overwrite it).
if env_bool("SWITCHBOARD_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Probes and Prometheus talk plain HTTP to the server itself, not through the proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# Content Security Policy (django-csp): enforced in production, report-only elsewhere
# (a violation shows in the browser's console, and breaks nothing mid-development).
# Scripts: this site's files only; no CDN (air-gapped installs). The few inline scripts
# of the console's templates are allowed by hash, each exactly as written: the two
# inline event handlers ('unsafe-hashes' admits exactly these sources) and the sidebar's
# <script> in console/base.html. tests/observability/test_production.py fails, naming
# the hash, when a template gains or changes one. Styles: inline style attributes and
# htmx's indicator <style> stay allowed, since templates size their bars with them.
CSP_INLINE_EVENT_HANDLERS = ("return confirm(this.dataset.confirm)", "this.form.submit()")
CSP_INLINE_SCRIPT_HASHES = ("sha256-VPf3R0SL2PgJ5fHtpBVyR0TIq+OpIBSzctC7B7wQvw0=",)
_CSP_HANDLER_HASHES = [
    f"'sha256-{base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()}'"
    for source in CSP_INLINE_EVENT_HANDLERS
]
_CSP_SCRIPT_HASHES = [f"'{digest}'" for digest in CSP_INLINE_SCRIPT_HASHES]
_CSP = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, UNSAFE_HASHES, *_CSP_HANDLER_HASHES, *_CSP_SCRIPT_HASHES],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        # Same-origin fetches and the console's WebSocket ('self' covers ws/wss too).
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
if SWITCHBOARD_PRODUCTION:
    CONTENT_SECURITY_POLICY = _CSP
else:
    CONTENT_SECURITY_POLICY_REPORT_ONLY = _CSP
