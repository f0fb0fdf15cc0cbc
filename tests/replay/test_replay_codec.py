"""The replay tests through the payload codec, as a worker with YHF_PAYLOAD_KEY runs them: every
committed history (recorded plain, before the codec was on) replays with the codec's data
converter, and the histories recorded with the codec on (histories_encrypted/, under the public
test key of tests/workflows/test_codec_history.py) replay with it, after a key rotation too, and
not without it.

Record the encrypted ones with `YHF_RECORD_HISTORIES=1` over tests/workflows/test_codec_history.py."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from config import Settings
from integrations.temporal import data_converter
from tests.replay.test_replay import HISTORIES, WORKFLOWS
from tests.workflows.test_codec_history import ENCRYPTED_HISTORIES, TEST_PAYLOAD_KEY
from worker import WORKFLOW_RUNNER

ENCRYPTED = sorted(ENCRYPTED_HISTORIES.glob("*.json"))
# after a rotation: a new key encrypts, the test key still decrypts
ROTATED = "next:" + base64.b64encode(b"\x07" * 32).decode() + "," + TEST_PAYLOAD_KEY


def converter(payload_key: str) -> DataConverter:
    return data_converter(Settings(sandbox=True, payload_key=payload_key))


async def replay(path: Path, data: DataConverter) -> BaseException | None:
    history = WorkflowHistory.from_json(f"visit-{path.stem}", path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, workflow_runner=WORKFLOW_RUNNER, data_converter=data)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return result.replay_failure


def test_there_is_an_encrypted_history() -> None:
    assert ENCRYPTED, "record one: YHF_RECORD_HISTORIES=1 over tests/workflows/test_codec_history.py"
    assert "YmluYXJ5L2VuY3J5cHRlZA==" in ENCRYPTED[0].read_text()  # base64 of binary/encrypted


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_plain_histories_replay_through_the_codec(path: Path) -> None:
    assert await replay(path, converter(TEST_PAYLOAD_KEY)) is None


@pytest.mark.parametrize("path", ENCRYPTED, ids=[p.stem for p in ENCRYPTED])
async def test_encrypted_histories_replay_with_the_key_and_after_a_rotation(path: Path) -> None:
    assert await replay(path, converter(TEST_PAYLOAD_KEY)) is None
    assert await replay(path, converter(ROTATED)) is None


@pytest.mark.parametrize("path", ENCRYPTED, ids=[p.stem for p in ENCRYPTED])
async def test_encrypted_histories_do_not_replay_without_their_key(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert await replay(path, DataConverter.default) is not None
    other = "other:" + base64.b64encode(b"\x09" * 32).decode()
    assert await replay(path, converter(other)) is not None
    assert "key id 'test-2026', which YHF_PAYLOAD_KEY does not list" in caplog.text  # the worker's log says why
