"""OpenAPI description of the bearer authentication (drf-spectacular extension)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class SessionTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.SessionTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return build_bearer_security_scheme_object(
            header_name="HTTP_AUTHORIZATION", token_prefix="Bearer", bearer_format="JWT"
        )
