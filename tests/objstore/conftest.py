"""A local GCS (gcp-storage-emulator + a TLS proxy for TensorFlow, see gcs_emulator.py) for the gs:// tests.

``gcs_server`` starts it once per session on 127.0.0.1 (ephemeral ports).  ``gcs_module`` points every client
of a test module at it through the clients' own switches, the ones a user of an emulator would set:

* ``STORAGE_EMULATOR_HOST``: gcsfs (every laionprep stage, img2dataset's parquet and stats files) and
  google-cloud-storage (Beam's gcsio);
* ``NO_GCE_CHECK=true``: no probing for a GCE metadata server: with no credentials the clients go anonymous;
* ``https_proxy`` + ``CURL_CA_BUNDLE`` + ``GOOGLE_AUTH_TOKEN_FOR_TESTING``: TensorFlow's C++ GCS client (TFDS reads,
  the trainer's tf.data input pipeline, img2dataset's TFRecord writer), which has no endpoint switch;

and yields a fresh bucket name.  Environment variables are inherited by the child processes (img2dataset's, Beam's).
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


class GcsServer:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "gcs_emulator.py"),
                                      os.path.join(workdir, "data"), os.path.join(workdir, "certs")],
                                     stdout=subprocess.PIPE, stderr=open(os.path.join(workdir, "log"), "wb"), text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "PORTS":
            self.proc.kill()
            raise RuntimeError(f"GCS emulator did not start; see {workdir}/log")
        self.port, self.proxy_port = int(line[1]), int(line[2])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.ca = os.path.join(workdir, "certs", "ca.pem")

    def env(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "NO_GCE_CHECK": "true",
                "https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "127.0.0.1,localhost",
                "NO_PROXY": "127.0.0.1,localhost", "CURL_CA_BUNDLE": self.ca,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token"}

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="laionprep-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    srv = GcsServer(str(tmp_path_factory.mktemp("gcs")))
    yield srv
    srv.stop()


def _new_bucket(server: GcsServer) -> str:
    bucket = f"laionprep-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(bucket)
    return bucket


@pytest.fixture(scope="module")
def gcs_module(gcs_server):
    """A new, empty bucket on the emulator (its name), with the clients pointed at it for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in gcs_server.env().items():
            mp.setenv(k, v)
        yield _new_bucket(gcs_server)

