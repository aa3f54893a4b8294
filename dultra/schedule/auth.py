"""Credentials for the Kubeflow Pipelines API: a bearer token (inline or from a file) and/or a cookie.

    auth = KfpAuth.resolve(token_file="/var/run/secrets/kubeflow/pipelines/token")
    KfpClient("https://kubeflow.example.com/pipeline", auth=auth)

What each real setup needs:
- Port-forward to `ml-pipeline-ui` / `ml-pipeline` (single-user or standalone KFP): nothing.
- A pod inside a multi-user Kubeflow: the projected service-account token KFP documents
  (audience `pipelines.kubeflow.org`), mounted at `/var/run/secrets/kubeflow/pipelines/token`
  or where `KF_PIPELINES_SA_TOKEN_PATH` says; sent as `Authorization: Bearer`. It is read
  on every request because the kubelet rotates it.
- Outside the cluster through Kubeflow's Istio gateway with Dex + oauth2-proxy (Kubeflow
  1.8+) or oidc-authservice (older): either a bearer token the proxy accepts (an ID token
  from the identity provider, or a Kubernetes service-account token where the proxy is set
  up to accept them) or the browser session cookie, `oauth2_proxy_kubeflow=...` (or
  `authservice_session=...`), copied from a logged-in browser.
- Anything else that wants a bearer token (IAP, an API gateway): pass it as the token.

Not supported: obtaining tokens interactively (OAuth device flow, Dex password login,
Google IAP client ids) and custom headers such as `kubeflow-userid`. TLS follows httpx
defaults: certifi, or SSL_CERT_FILE / SSL_CERT_DIR for a private CA; HTTPS_PROXY is honored.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from dultra.schedule.errors import ScheduleSettingsError

TOKEN_ENV = "KF_PIPELINES_TOKEN"
"""Environment variable holding a bearer token (dultra's name; the kfp SDK has none)."""
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
"""Environment variable naming a token file (the kfp SDK's name for the same thing)."""
COOKIE_ENV = "KF_PIPELINES_COOKIE"
"""Environment variable holding a Cookie header value (dultra's name)."""
DEFAULT_TOKEN_PATH = Path("/var/run/secrets/kubeflow/pipelines/token")
"""Where Kubeflow's PodDefault mounts the projected KFP token in a pod (used when it exists)."""


@dataclass(frozen=True)
class KfpAuth:
    """How requests authenticate; all None = no credentials (port-forward, single-user)."""

    token: str | None = None
    """Bearer token sent as `Authorization: Bearer <token>`."""
    token_file: Path | None = None
    """File holding a bearer token, re-read for every request (rotating projected tokens)."""
    cookie: str | None = None
    """Value of the `Cookie` header, e.g. `oauth2_proxy_kubeflow=...`."""

    def __post_init__(self) -> None:
        if self.token is not None and self.token_file is not None:
            raise ScheduleSettingsError("give a token or a token file, not both")

    @classmethod
    def resolve(cls, token: str | None = None, token_file: str | Path | None = None,
                cookie: str | None = None, env: Mapping[str, str] | None = None,
                default_token_path: Path | None = None) -> KfpAuth:
        """Explicit values first (--token, --token-file, --cookie), then the environment
        (KF_PIPELINES_TOKEN, then KF_PIPELINES_SA_TOKEN_PATH; KF_PIPELINES_COOKIE), then the
        in-pod token file if it exists."""
        env = os.environ if env is None else env
        default_token_path = default_token_path or DEFAULT_TOKEN_PATH
        if token is None and token_file is None:
            token = env.get(TOKEN_ENV) or None
            if token is None:
                token_file = env.get(TOKEN_PATH_ENV) or None
            if token is None and token_file is None and default_token_path.is_file():
                token_file = default_token_path
        cookie = cookie if cookie is not None else (env.get(COOKIE_ENV) or None)
        auth = cls(token=token.strip() if token else None,
                   token_file=Path(token_file) if token_file else None,
                   cookie=cookie.strip() if cookie else None)
        if token is not None and not auth.token:
            raise ScheduleSettingsError("the bearer token is empty")
        auth.read_token()  # fail now (a token file: with its path) rather than at the first request
        if auth.cookie:
            _header_safe(auth.cookie, "the cookie")
        return auth

    def read_token(self) -> str | None:
        """The bearer token to send now (None: no token)."""
        if self.token_file is None:
            return None if self.token is None else _header_safe(self.token, "the bearer token")
        try:
            token = self.token_file.read_text().strip()
        except OSError as err:
            raise ScheduleSettingsError(f"cannot read token file {self.token_file}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise ScheduleSettingsError(f"token file {self.token_file} is not text") from None
        if not token:
            raise ScheduleSettingsError(f"token file {self.token_file} is empty")
        return _header_safe(token, f"the token in {self.token_file}")

    def describe(self) -> str:
        """What is sent, without secrets (for logs and error messages)."""
        parts = []
        if self.token is not None:
            parts.append("bearer token")
        if self.token_file is not None:
            parts.append(f"bearer token from {self.token_file}")
        if self.cookie:
            parts.append("cookie " + ", ".join(c.split("=", 1)[0].strip() for c in self.cookie.split(";")))
        return " + ".join(parts) or "no credentials"

    def httpx_auth(self) -> httpx.Auth:
        return _HeaderAuth(self)


class _HeaderAuth(httpx.Auth):
    """Adds the headers per request, so a rotated token file is picked up."""

    def __init__(self, auth: KfpAuth):
        self._auth = auth

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._auth.read_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        if self._auth.cookie:
            request.headers["Cookie"] = self._auth.cookie
        yield request


def _header_safe(value: str, what: str) -> str:
    """`value` if it can go in an HTTP header; a line break or control character would fail
    every request as if the server were unreachable."""
    if not (value.isascii() and value.isprintable()):
        raise ScheduleSettingsError(f"{what} holds a line break, control or non-ASCII character; "
                                    "it cannot be sent in an HTTP header")
    return value
