"""Date formats for the admin and templates: operators compare times to the second with
logs and commands, which print UTC (`core.commands.when`), so times carry seconds and zone."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
