"""S3-compatible object storage as a real server: S3Proxy with its filesystem backend."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.paths import S3PROXY_JAR


def render_properties(base_dir: Path, port: int, access_key: str, secret_key: str) -> str:
    """s3proxy.properties: filesystem backend under ``base_dir``, AWS v2/v4 signatures, loopback only.

    ``ignore-unknown-headers``: S3Proxy refuses a request carrying a header it does not implement, such as
    ``x-amz-security-token`` (temporary credentials), which AWS S3 accepts; ignored, the header is still part
    of the signature S3Proxy checks."""
    props = {
        "s3proxy.endpoint": f"http://127.0.0.1:{port}",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.ignore-unknown-headers": "true",
        "s3proxy.identity": access_key,
        "s3proxy.credential": secret_key,
        "jclouds.provider": "filesystem",
        "jclouds.filesystem.basedir": str(base_dir),
        "jclouds.identity": access_key,
        "jclouds.credential": secret_key,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


@dataclass
class S3Server:
    """One S3Proxy on loopback. ``region`` is what boto3 should sign for."""

    home: Path
    port: int
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    proc: procs.Proc | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 60) -> None:
        base = self.home / "blobs"
        base.mkdir(parents=True, exist_ok=True)
        props = self.home / "s3proxy.properties"
        props.touch(mode=0o600)
        props.write_text(render_properties(base, self.port, self.access_key, self.secret_key))
        java = shutil.which("java") or "java"
        self.proc = procs.start("s3proxy", [java, "-Xmx256m", "-jar", str(S3PROXY_JAR), "--properties", str(props)],
                                self.home)
        procs.wait_until(f"s3proxy on {self.endpoint}", self._ready, deadline_s, interval_s=0.5)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          # S3Proxy predates the CRC checksums newer boto3 sends by default.
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"s3proxy exited; log tail:\n{self.proc.log_tail()}")
        if not procs.port_open(self.port):
            return False
        self.client().list_buckets()
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
