"""Settings of the Django reference app: the minimum to serve six views."""

SECRET_KEY = "callstream-reference-app-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "adapters.django.project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []  # no GZipMiddleware: it would compress (and buffer) the stream
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
WSGI_APPLICATION = "adapters.django.project.wsgi.application"
ASGI_APPLICATION = "adapters.django.project.asgi.application"
