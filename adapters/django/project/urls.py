from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("health", views.health),
    path("stream", views.stream),
    path("agent", views.agent),
    path("approval", views.approval),
    path("approval/<str:thread>/decision", views.approval_decision),
    path("v1/chat/completions", views.chat_completions),
    path("runs", views.start_run),
    path("runs/<str:key>/stream", views.run_stream),
    path("runs/<str:key>/cancel", views.cancel_run),
]

# JSON instead of Django's HTML error pages
handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error
