"""The console page: a static shell; everything it shows comes from the public API
through the JavaScript client (`console/static/console/symphainy-client.js`)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.refresh_cookie import refresh_cookie_enabled


def console_page(request: HttpRequest) -> HttpResponse:
    # Whether the page may try to restore its session from the refresh cookie: with the
    # feature off it shows the login form at once and asks the server for nothing.
    return render(request, "console/index.html", {"refresh_cookie": refresh_cookie_enabled()})
