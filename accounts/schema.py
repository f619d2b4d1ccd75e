"""OpenAPI descriptions the generator cannot infer (drf-spectacular extensions): the bearer
authentication, and the password rules a new password must pass."""

from django.contrib.auth.password_validation import MinimumLengthValidator, get_default_password_validators
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class SessionTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.SessionTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return build_bearer_security_scheme_object(
            header_name="HTTP_AUTHORIZATION", token_prefix="Bearer", bearer_format="JWT"
        )


class PasswordSchema(OpenApiSerializerFieldExtension):
    """AUTH_PASSWORD_VALIDATORS, read when the schema is built: the minimum length in the
    pattern (with no NUL, as core.drf.text_pattern), the rules JSON Schema cannot say (not
    too common, not all digits, not like the email or name) in the description."""

    target_class = "accounts.apis.PasswordField"
    priority = 1  # before core.drf.TextFieldSchema, whose pattern it adds itself

    def map_serializer_field(self, auto_schema, direction):  # type: ignore[no-untyped-def]
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        validators = get_default_password_validators()
        shortest = max([v.min_length for v in validators if isinstance(v, MinimumLengthValidator)], default=1)
        # In the pattern: drf-spectacular sets minLength 1 on any non-blank field after this.
        schema["pattern"] = f"^[^\\u0000]{{{shortest},}}$"
        rules = " ".join(v.get_help_text() for v in validators)
        schema["description"] = f"Checked by the server's password rules: {rules}".strip()
        return schema
