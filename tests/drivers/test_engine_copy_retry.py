"""Podman's copy into a container can fail as its helper process starts (500 "passing bulk input to subprocess:
write |1: broken pipe", once in a CI run): ``put_files`` writes the files again, at most three times in all,
and raises any other engine error at once. The engine's answer is played by a stand-in container (the race
cannot be caused on purpose); the copy itself is exercised on the real engine by every deploy test."""

from __future__ import annotations

import io
import tarfile

import docker.errors
import pytest
import requests

from drivers.engine import put_files

BROKEN = "passing bulk input to subprocess: write |1: broken pipe"


def _error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine error", response=response, explanation=explanation)


class Container:
    def __init__(self, failures: list[docker.errors.APIError]) -> None:
        self.failures, self.calls, self.written = list(failures), 0, {}

    def put_archive(self, path: str, data: bytes) -> bool:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            self.written = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
        return True


def test_a_broken_copier_is_tried_again_and_the_files_land():
    c = Container([_error(500, BROKEN), _error(500, BROKEN)])
    put_files(c, {"/etc/nginx/nginx.conf": "events {}\n"})
    assert c.calls == 3 and c.written == {"etc/nginx/nginx.conf": "events {}\n"}


def test_a_copier_that_keeps_breaking_fails_after_three_tries():
    c = Container([_error(500, BROKEN)] * 3)
    with pytest.raises(docker.errors.APIError, match="broken pipe"):
        put_files(c, {"/x": "y"})
    assert c.calls == 3


@pytest.mark.parametrize("status, explanation", [(500, "no space left on device"), (404, "no such container")])
def test_any_other_engine_error_is_raised_at_once(status, explanation):
    c = Container([_error(status, explanation)])
    with pytest.raises(docker.errors.APIError):
        put_files(c, {"/x": "y"})
    assert c.calls == 1
