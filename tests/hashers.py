"""Argon2 with test-sized costs: the same code path, without 100 MiB per hash."""

from django.contrib.auth.hashers import Argon2PasswordHasher


class FastArgon2PasswordHasher(Argon2PasswordHasher):
    algorithm = "argon2"
    time_cost = 1
    memory_cost = 256
    parallelism = 1
