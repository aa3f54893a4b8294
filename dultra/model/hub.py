"""Checkpoints named by their Hugging Face Hub id, downloaded once into the Hub's cache.

    path = hub_checkpoint("sengi/dUltra-math")             # or "GSAI-ML/LLaDA-8B-Instruct@<revision>"

Only what loading reads comes down: configs, tokenizer files and safetensors weights (no
pickled .bin files, no remote code). The Hub's own environment applies: HF_TOKEN or `hf
auth login` for gated repositories, HF_HOME for the cache, HF_HUB_OFFLINE=1 to load from
the cache without the network, HF_ENDPOINT for a mirror, HF_HUB_ETAG_TIMEOUT (seconds, default
10) for how long the first look-up waits for an answer before the cache is used.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from dultra.errors import CheckpointError, first_line

# owner/name, optionally @revision (a branch, tag or commit).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")
FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def is_hub_id(name: str) -> bool:
    return HUB_ID.fullmatch(name) is not None


@functools.cache  # one look-up per process: loading asks for the model, its tokenizer and its EOS ids
def hub_checkpoint(name: str) -> Path:
    """The local snapshot of Hub repository `name` (owner/name[@revision]), downloaded if needed."""
    repo, _, revision = name.partition("@")
    try:
        return Path(_snapshot(repo, revision or None))
    except HFValidationError as err:  # e.g. 'a..b' passes our pattern, not the Hub's rules
        raise CheckpointError(f"{name}: no such local directory, and not a valid Hub id: {err}") from None
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(f"{name}: no such local directory, and the Hugging Face Hub "
                              f"({constants.ENDPOINT}) {_reason(err, revision)}") from None


def _snapshot(repo: str, revision: str | None) -> str:
    """snapshot_download, with a deadline on its first look-up; without an answer, the cached copy."""
    if constants.HF_HUB_OFFLINE:
        return snapshot_download(repo, revision=revision, allow_patterns=FILES)
    if (silence := no_answer(repo, "model", revision)) is not None:
        try:
            return snapshot_download(repo, revision=revision, allow_patterns=FILES, local_files_only=True)
        except LocalEntryNotFoundError:
            raise OSError(f"{silence}, and no copy is cached") from None
    return snapshot_download(repo, revision=revision, allow_patterns=FILES)


def no_answer(repo: str, repo_type: str, revision: str | None) -> str | None:
    """Why the Hub did not answer a look-up of `repo` within HF_HUB_ETAG_TIMEOUT s; None when it did.

    huggingface_hub's client waits forever on a server that accepts the connection but never
    answers (a proxy or firewall swallowing requests), so what dultra downloads is looked up
    here first, with a deadline. Errors the Hub answers with (no such repository, gated) raise.
    """
    try:  # the download looks it up again by name, so that the cache records which commit `main` is
        HfApi().repo_info(repo, repo_type=repo_type, revision=revision or constants.DEFAULT_REVISION,
                          timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (HfHubHTTPError, HFValidationError):
        raise
    except Exception as err:  # refused, timed out, a broken proxy
        return f"{type(err).__name__}: {first_line(err, 'no answer')} (within HF_HUB_ETAG_TIMEOUT = {constants.HF_HUB_ETAG_TIMEOUT} s)"
    return None


def _reason(err: Exception, revision: str) -> str:
    if isinstance(err, GatedRepoError):
        return "gates it: accept its terms on the Hub, then `hf auth login`"
    if isinstance(err, RepositoryNotFoundError):
        return "has no such repository (or a private one: `hf auth login`)"
    if isinstance(err, RevisionNotFoundError):
        return f"has no revision {revision!r} of it"
    return f"did not provide it: {first_line(err).removeprefix('Got: ')}"
