# The audit trail moved to core (see core/migrations/0001): the table stays, only
# Django's state forgets the model here.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('sessions_runtime', '0003_audit_account_kinds'),
        ('core', '0001_auditevent_to_core'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='AuditEvent')],
            database_operations=[],
        ),
    ]
