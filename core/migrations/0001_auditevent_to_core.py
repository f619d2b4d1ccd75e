# The audit trail moved from sessions_runtime to core. Its table keeps its name and its
# rows: this only tells Django's state where the model lives now.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('accounts', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        # The table was created (and its columns settled) by these.
        ('sessions_runtime', '0003_audit_account_kinds'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('kind', models.CharField(choices=[('login.succeeded', 'Login Succeeded'), ('login.failed', 'Login Failed'), ('user.registered', 'User Registered'), ('user.deactivated', 'User Deactivated'), ('tenant.created', 'Tenant Created'), ('tenant.suspended', 'Tenant Suspended'), ('membership.changed', 'Membership Changed'), ('membership.removed', 'Membership Removed'), ('session.created', 'Session Created'), ('session.ended', 'Session Ended'), ('token.refresh_reused', 'Refresh Token Reused'), ('socket.refused', 'Socket Refused'), ('intent.received', 'Intent Received'), ('execution.finished', 'Execution Finished')], db_index=True, max_length=48)),
                        ('actor_type', models.CharField(choices=[('user', 'User'), ('admin', 'Admin'), ('command', 'Management command'), ('system', 'System')], max_length=16)),
                        ('session_id', models.UUIDField(blank=True, db_index=True, null=True)),
                        ('client_address', models.GenericIPAddressField(blank=True, null=True)),
                        ('data', models.JSONField(blank=True, default=dict)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('tenant', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='accounts.tenant')),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'sessions_runtime_auditevent',
                        'ordering': ['-at', '-id'],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
