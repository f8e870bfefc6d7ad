from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("health", views.health),
    path("stream", views.stream),
    path("agent", views.agent),
    path("native", views.native),
    path("v1/chat/completions", views.chat_completions),
]
