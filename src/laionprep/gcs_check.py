"""A fast first look at a gs:// bucket: are there credentials, is Cloud Storage reachable, does the bucket exist?

gcsfs, asked to use a bucket without credentials or without a network, first runs google-auth's credential
discovery (which pings the GCE metadata server, 3 attempts of 3 s each where nothing answers), then retries every
request 6 times with back-off: a user waits ~50 s for a 150-line traceback.  :func:`check_access` asks once, with
short deadlines and no retries, before any work: one ``objects.list`` request (``maxResults=1``) with the
credentials google-auth finds (or anonymously, as gcsfs does when it finds none: public buckets can be read
that way), and turns every failure into one :class:`~laionprep.errors.UsageError` naming the bucket and the
ways to authenticate.  Each bucket is asked once per process.
"""
from __future__ import annotations

import os
import re
import threading

from laionprep.errors import UsageError

CREDENTIALS_DEADLINE_S = 5.0  # google-auth's discovery (ADC file, gcloud, GCE metadata server)
REQUEST_TIMEOUT_S = (5.0, 10.0)  # (connect, read) of the one listing request
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
AUTH_WAYS = ("authenticate with `gcloud auth application-default login`, or set "
             "GOOGLE_APPLICATION_CREDENTIALS=KEY.json (a service-account key), or run on GCE/GKE where the "
             "metadata server provides credentials")

_SEEN: set[tuple[str, bool]] = set()


def bucket_of(url: str) -> str:
    return str(url).split("://", 1)[1].split("/", 1)[0]


def endpoint() -> str:
    """The JSON API root gcsfs uses: ``STORAGE_EMULATOR_HOST`` when set, else Google Cloud Storage."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host in ("", "default"):
        return "https://storage." + os.environ.get("GOOGLE_CLOUD_UNIVERSE_DOMAIN", "googleapis.com")
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def _credentials():
    """(credentials or None, why none) from google-auth's discovery, given at most CREDENTIALS_DEADLINE_S."""
    box: dict = {}

    def discover():
        try:
            import google.auth

            box["creds"], _ = google.auth.default(scopes=[SCOPE])
        except Exception as e:  # noqa: BLE001  (DefaultCredentialsError, a malformed key file...): reported below
            box["error"] = e

    t = threading.Thread(target=discover, name="laionprep-gcs-credentials", daemon=True)
    t.start()
    t.join(CREDENTIALS_DEADLINE_S)
    if t.is_alive():
        return None, f"no credentials found within {CREDENTIALS_DEADLINE_S:.0f} s (no GCE metadata server answered)"
    if "error" in box:
        e = box["error"]
        if type(e).__name__ == "DefaultCredentialsError" and "were not found" in str(e):
            return None, "none found: no GOOGLE_APPLICATION_CREDENTIALS, no gcloud application-default login, no GCE " \
                         "metadata server"
        return None, _first_line(e)
    return box["creds"], ""


_NETWORK_REASONS = (
    (re.compile(r"ProxyError|Unable to connect to proxy", re.I), "the https proxy cannot be reached"),
    (re.compile(r"NameResolution|Name or service not known|nodename nor servname|getaddrinfo", re.I),
     "its name does not resolve (no network, or no DNS)"),
    (re.compile(r"timed out|timeout", re.I), "no answer in time"),
    (re.compile(r"refused", re.I), "connection refused"),
)


def _network_reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return next((why for pat, why in _NETWORK_REASONS if pat.search(text)), _first_line(e))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def check_access(url: str, flag: str, *, write: bool) -> None:
    """Refuse, within ~10 s, a gs:// ``url`` whose bucket cannot be used: no network, no credentials where they
    are needed; for an output (``write``) also no such bucket or a forbidden listing.  An input passes those two:
    its stage says which input is missing, and a reader may be allowed to get objects it may not list.  Other
    URLs pass."""
    url = str(url)
    if not url.startswith(("gs://", "gcs://")):
        return
    bucket = bucket_of(url)
    if (bucket, write) in _SEEN or (bucket, True) in _SEEN:
        return
    import requests

    root = endpoint()
    emulator = not root.startswith("https://storage.")
    creds, why = (None, "") if emulator else _credentials()
    where = f"{flag} {url}"
    api = f"{root}/storage/v1/b/{bucket}/o"
    try:
        if creds is not None:
            from google.auth.transport.requests import AuthorizedSession

            with AuthorizedSession(creds) as session:
                resp = session.get(api, params={"maxResults": 1, "fields": "kind"}, timeout=REQUEST_TIMEOUT_S)
        else:
            resp = requests.get(api, params={"maxResults": 1, "fields": "kind"}, timeout=REQUEST_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001  (requests' ConnectionError/Timeout, google-auth's RefreshError...)
        host = root.split("://", 1)[1]
        if emulator:
            raise UsageError(f"cannot reach the GCS emulator at {root} (STORAGE_EMULATOR_HOST) for bucket "
                             f"gs://{bucket}: {_network_reason(e)}", where=where,
                             fix="start the emulator, or unset STORAGE_EMULATOR_HOST to use Google Cloud "
                                 "Storage") from None
        if type(e).__module__.startswith("google.auth"):  # the credentials found could not get a token
            raise UsageError(f"the Google credentials found cannot be used for bucket gs://{bucket}: "
                             f"{_first_line(e)}", where=where, fix=AUTH_WAYS) from None
        no_creds = f"; credentials: {why}" if creds is None else ""
        raise UsageError(f"cannot reach Google Cloud Storage ({host}) for bucket gs://{bucket}: "
                         f"{_network_reason(e)}{no_creds}", where=where,
                         fix="check the network (or the proxy: https_proxy); " + AUTH_WAYS) from None
    if resp.status_code == 404 and write:  # an input's stage names the missing input itself ("not found: URL")
        raise UsageError(f"bucket gs://{bucket} does not exist", where=where,
                         fix=f"create it (gcloud storage buckets create gs://{bucket}) or correct the name")
    if resp.status_code == 401 or (resp.status_code == 403 and creds is None):
        found = f"credentials: {why}" if creds is None else "the credentials found were refused"
        raise UsageError(f"bucket gs://{bucket} needs credentials: {found}", where=where, fix=AUTH_WAYS)
    if resp.status_code == 403 and write:
        raise UsageError(f"no permission to use bucket gs://{bucket} ({_message(resp)})", where=where,
                         fix="use credentials that may read and write it (" + AUTH_WAYS.removeprefix(
                             "authenticate with ") + ")")
    if resp.status_code >= 500 or resp.status_code == 429:
        raise UsageError(f"Google Cloud Storage answered HTTP {resp.status_code} for bucket gs://{bucket} "
                         f"({_message(resp)})", where=where, fix="try again later")
    _SEEN.add((bucket, write))


def _message(resp) -> str:
    try:
        return str(resp.json()["error"]["message"])[:300]
    except Exception:  # noqa: BLE001  (not JSON)
        return f"HTTP {resp.status_code}"
