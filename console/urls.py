from django.urls import path

from console import views

urlpatterns = [
    path("", views.console_page, name="console"),
]
