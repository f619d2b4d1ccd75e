"""The console page: a static shell; everything it shows comes from the public API
through the JavaScript client (`console/static/console/symphainy-client.js`)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def console_page(request: HttpRequest) -> HttpResponse:
    return render(request, "console/index.html")
