"""What both admin modules share: the acting caller, the object a service saved, the
read-only base, the id-or-email search, and the audit trail's admin."""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable, Iterator

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from core.caller import Caller
from core.drf import client_address
from core.models import AuditEvent

# The app list beside every page takes 300 px of a 1366 px laptop screen, which the operator
# lists need; the breadcrumbs and the index page do its job.
admin.site.enable_nav_sidebar = False
# Titled after the product, not "Django administration".
admin.site.site_header = "Symphainy runtime gateway"
admin.site.site_title = "Symphainy admin"
admin.site.index_title = "Operations"


def admin_caller(request: HttpRequest) -> Caller:
    """The staff user acting in the admin, with their address as the throttles see it
    (X-Forwarded-For behind TRUSTED_PROXY_COUNT proxies), so the audit trail names the
    operator's address and not the proxy's."""
    return Caller.admin(user_id=request.user.pk, client_address=client_address(request))


def adopt_saved(obj: Model, saved: Model) -> None:
    """Point the object an add form built at the row a service created instead, so the
    admin's inlines, change message and redirect use that row."""
    obj.pk = saved.pk
    obj.refresh_from_db()
    obj._state.adding = False  # noqa: SLF001 - the row exists now


def short_id(value: object) -> str:
    """The first block of a UUID on a list page: enough to tell rows apart. The whole id is
    the title (on hover) and stays in the text, clipped, so a copy of the cell takes it all
    (core/admin-lists.css); the change page and the search take the whole id."""
    if value is None or value == "":
        return "-"
    text = str(value)
    head, sep, rest = text.partition("-")
    return format_html('<span class="short-id" title="{}">{}<span class="id-rest">{}{}</span></span>',
                       text, head, sep, rest)


def email_shown(email: str | None) -> str:
    """An email that wraps where a reader expects, after the @ and before a dot (`<wbr>`),
    never in the middle of a word ('-' for none)."""
    if not email:
        return "-"
    return mark_safe("<wbr>".join(escape(piece) for piece in re.split(r"(?=\.)|(?<=@)", email)))  # noqa: S308


def address_shown(address: str | None) -> str:
    """A client address that wraps after a colon (an IPv6 address is up to 39 characters)."""
    if not address:
        return "-"
    return mark_safe("<wbr>".join(escape(piece) for piece in re.split(r"(?<=:)", address)))  # noqa: S308


def email_column(path: str, description: str) -> Callable[[Model], str]:
    """A list column of the email at `path` ("user__email", "email"), shown by
    `email_shown` and sorted by it; its cells have the class `field-<first part>`."""

    def column(obj: Model) -> str:
        value: Any = obj
        for part in path.split("__"):
            value = getattr(value, part, None) if value is not None else None
        return email_shown(value)

    column.__name__ = path.split("__")[0]
    return admin.display(description=description, ordering=path)(column)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the runtime itself: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class IdOrEmailSearch:
    """Search by an exact id (`search_id_field`) or by the user's email. An empty search
    is no filter: a join on the user would hide the rows without one (failed logins,
    socket refusals, tenant changes)."""

    search_id_field = "pk"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(**{self.search_id_field: uuid.UUID(term)}), False
        except ValueError:
            return queryset.filter(user__email__icontains=term), False


@admin.register(AuditEvent)
class AuditEventAdmin(IdOrEmailSearch, ReadOnlyAdmin):
    search_id_field = "session_id"
    list_display = [
        "at", "kind", "actor_type", email_column("actor__email", "actor"), email_column("user__email", "user"),
        "tenant", "session_shown", "address",
    ]
    list_select_related = ["actor", "user", "tenant"]
    list_filter = ["kind", "actor_type"]
    search_fields = ["=session_id", "user__email"]
    date_hierarchy = "at"
    show_full_result_count = False

    @admin.display(description="session", ordering="session_id")
    def session_shown(self, event: AuditEvent) -> str:
        return short_id(event.session_id)

    @admin.display(description="client address", ordering="client_address")
    def address(self, event: AuditEvent) -> str:
        return address_shown(event.client_address)


class UserEmailFilter(admin.SimpleListFilter):
    """By user, as a box for an email (exact, or a part of one): a list of links or a select
    of every user is unusable with thousands. Hand-written: Django's list filters have no
    autocomplete, and the packages that add one are unmaintained since 2021."""

    title = "user"
    parameter_name = "user_email"
    template = "admin/core/text_filter.html"
    placeholder = "email, or a part of one"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # not shown: the template draws a text box; one entry, so it is drawn

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        kept = [(k, v) for k, v in changelist.params.items() if k not in (self.parameter_name, "p")]
        yield {"query_parts": kept, "value": self.value() or "", "placeholder": self.placeholder}

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        term = (self.value() or "").strip()
        if not term:
            return queryset
        if "@" in term and queryset.filter(user__email__iexact=term).exists():
            return queryset.filter(user__email__iexact=term)
        return queryset.filter(user__email__icontains=term)
