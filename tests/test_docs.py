"""/docs works offline: Swagger UI's files come from this server (drf-spectacular-sidecar),
pinned by the package version, never from a CDN."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_docs_page_loads_its_scripts_and_styles_from_this_server():
    client = Client()
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'<script[^>]+src="([^"]+)"', html) + re.findall(r'<link[^>]+href="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by this server"
        response = client.get(asset)
        assert response.status_code == 200, asset
        b"".join(response.streaming_content) if response.streaming else response.content
