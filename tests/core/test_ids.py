"""`local_id`, the request ids and channel names a process makes: unique within it, and
across processes, a forked child's included, without a random read for each."""

from __future__ import annotations

import asyncio
import os
import re
from unittest import mock

from core import ids


def test_local_ids_are_32_hex_digits_and_unique_in_a_process():
    made = [ids.local_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in made)


def test_request_ids_and_channel_names_read_no_random_bytes():
    from core.middleware import request_id_from
    from core.process import server_instance_id
    from realtime.consumers import RuntimeAgentConsumer

    server_instance_id()  # drawn once per process
    with mock.patch("os.urandom", side_effect=AssertionError("a syscall per id")):
        assert len(request_id_from("bad id\n")) == 32
        consumer = RuntimeAgentConsumer()

        async def receive() -> dict:
            raise LookupError  # stop the consumer as soon as it has named itself

        try:
            asyncio.run(consumer({"type": "websocket"}, receive, None))
        except LookupError:
            pass
    assert consumer.channel_name.startswith("ws.")


def test_a_forked_child_does_not_repeat_its_parents_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, ids.local_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = ids.local_id()
    assert len(child) == 32 and child[:16] != parent[:16]
