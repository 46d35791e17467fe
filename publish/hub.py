"""Pushing a folder to the Hugging Face Hub: `create_repo` + `upload_folder`, a dry run that lists exactly what
would be uploaded, the token from huggingface_hub's own lookup, and errors that say what happened.

    plan = plan_upload("export/124M", "me/gpt2repro-124M", private=True)
    print(plan.describe())            # the dry run: files, sizes, repo, branch; no network, no token needed
    url = push(plan)                  # raises PublishError with a clear message on any failure

The token comes from `huggingface_hub.get_token()` (the HF_TOKEN variable, else the login stored by
`hf auth login`) and is never printed or logged. `upload_folder` makes one commit, so a failed push leaves
no partial commit; at worst an empty repository created by `create_repo`, which the error message says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id


# why a push cannot happen, said before an export (push_blocker) and after a failed one (resolve_token, explain_error)
OFFLINE = "HF_HUB_OFFLINE=1 is set, so huggingface_hub makes no network calls; unset it to push"
NO_TOKEN = "no Hugging Face token: run `hf auth login` (stores a token) or set HF_TOKEN to a token with write access"


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is on or the Hub endpoint (HF_ENDPOINT, default huggingface.co) does not answer
    a TCP connection within `timeout` seconds: checked before a download, so that no network costs seconds, not
    the libraries' minute of retries. Behind an HTTP(S) proxy a direct connection says nothing, so the answer
    is True and the libraries find out themselves."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    proxies = urllib.request.getproxies()  # also holds "no" (NO_PROXY), which is not a proxy
    if (proxies.get(endpoint.scheme or "https") or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return True
    try:
        with socket.create_connection((host, endpoint.port or (80 if endpoint.scheme == "http" else 443)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


class PublishError(RuntimeError):
    """A push that did not happen (or did not finish). The message says why and what to do."""


@dataclass
class UploadPlan:
    """What one `upload_folder` call will send: `files` are (path in repo, size in bytes), sorted."""

    repo_id: str
    folder: Path
    files: list[tuple[str, int]]
    revision: str | None = None  # None: the default branch (main)
    private: bool = False
    commit_message: str = "Upload model"
    path_in_repo: str = ""
    ignore_patterns: list[str] = field(default_factory=list)
    # files already in the repo (branch) that match these and are not in `files` are deleted by the same commit:
    # what an earlier upload left that this one does not have
    delete_patterns: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self, token_found: bool | None = None) -> str:
        lines = [
            f"repo:     {self.repo_id} " + ("(private: created private, or refused if it exists and is public)"
                                              if self.private else "(public if created now; an existing repo keeps "
                                              "its visibility)"),
            f"branch:   {self.revision or constants.DEFAULT_REVISION}",
            f"commit:   {self.commit_message}",
            f"from:     {self.folder}",
            f"files:    {len(self.files)}, {_human(self.total_bytes)} in all",
        ]
        lines += [f"  {size:>14,d}  {path}" for path, size in self.files]
        if self.delete_patterns:
            lines.append(f"removes:  files already on the branch that match {', '.join(self.delete_patterns)} and are "
                         "not listed above (an earlier upload's)")
        if token_found is not None:
            lines.append("token:    " + ("found (not shown)" if token_found else
                                         "NOT found: run `hf auth login` or set HF_TOKEN before pushing"))
        return "\n".join(lines)


def plan_upload(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload model",
    path_in_repo: str = "",
    ignore_patterns: list[str] | None = None,
    delete_patterns: list[str] | None = None,
) -> UploadPlan:
    """List the files `upload_folder` will send, with the same file walk and the same filter it uses.
    `delete_patterns`: files of the repo that the commit removes when this folder does not have them."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise PublishError(f"nothing to upload: {folder} is not a folder")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise PublishError(f"{repo_id!r} is not a valid Hub repo id (expected 'namespace/name'): {err}") from err
    ignore_patterns = list(ignore_patterns or [])
    on_disk = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    kept = filter_repo_objects(on_disk, ignore_patterns=ignore_patterns + list(DEFAULT_IGNORE_PATTERNS))
    prefix = f"{path_in_repo.strip('/')}/" if path_in_repo.strip("/") else ""
    files = sorted((prefix + rel, on_disk[rel].stat().st_size) for rel in kept)
    if not files:
        raise PublishError(f"nothing to upload: {folder} has no files")
    return UploadPlan(repo_id, folder, files, revision, private, commit_message, path_in_repo, ignore_patterns,
                      list(delete_patterns or []))


def resolve_token(token: str | None = None) -> str:
    """The token to push with: `token` if given, else huggingface_hub's lookup (HF_TOKEN, then the stored login)."""
    token = token or get_token()
    if not token:
        raise PublishError(f"{NO_TOKEN}; nothing was uploaded")
    return token


def push(plan: UploadPlan, *, token: str | None = None, api: HfApi | None = None) -> str:
    """Create the repo (and branch) if needed and upload the planned folder in one commit. Returns the commit URL.

    A private plan is refused (nothing uploaded) when the repository already exists and is public: create_repo
    does not change an existing repo's visibility, so the upload would be published.

    `api` is for tests (an object with HfApi's create_repo / repo_info / create_branch / upload_folder)."""
    token = resolve_token(token)
    api = api or HfApi()
    create_repo(api, plan, token, otherwise="push without --private")
    try:
        if plan.revision and plan.revision != constants.DEFAULT_REVISION:
            stage = f"creating branch {plan.revision!r}"
            api.create_branch(plan.repo_id, branch=plan.revision, token=token, exist_ok=True, repo_type="model")
        stage = "uploading"
        commit = api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=str(plan.folder),
            path_in_repo=plan.path_in_repo or None,
            commit_message=plan.commit_message,
            revision=plan.revision,
            ignore_patterns=plan.ignore_patterns or None,
            delete_patterns=plan.delete_patterns or None,
            token=token,
            repo_type="model",
        )
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message; the cause stays chained
        raise explain_error(err, plan, stage, token, repo_may_exist=True) from err
    return str(getattr(commit, "commit_url", commit))


def create_repo(api, plan: UploadPlan, token: str, otherwise: str) -> None:
    """`plan`'s repo, made if missing (exist_ok). A private plan is refused when the repo exists and is public:
    create_repo leaves an existing repo's visibility as it is, so what was asked to go up privately would be
    published (`otherwise` says how to go on). Any failure is a PublishError that says what to do."""
    stage = "creating the repository"
    try:
        api.create_repo(plan.repo_id, token=token, private=plan.private, exist_ok=True, repo_type="model")
        if plan.private:
            stage = "checking that the repository is private"
            public = getattr(api.repo_info(plan.repo_id, token=token, repo_type="model"), "private", None) is False
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message; the cause stays chained
        raise explain_error(err, plan, stage, token, repo_may_exist=True) from err
    if plan.private and public:
        raise PublishError(
            f"push to {plan.repo_id} refused: it was asked private, but the repository exists and is public, so "
            f"the upload would be published; make it private first (`hf repos settings {plan.repo_id} --private`, "
            f"or its Settings page) or {otherwise}; nothing was uploaded")


def explain_error(err: BaseException, plan: UploadPlan, stage: str, token: str | None = None,
                  repo_may_exist: bool = False) -> PublishError:
    """Turn a huggingface_hub / network exception into a PublishError that says what to do (token scrubbed)."""
    detail = str(err)
    if token:
        detail = detail.replace(token, "***")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status == 401:
        why = "the token was rejected (401): log in again with `hf auth login` or set HF_TOKEN to a valid token"
    elif isinstance(err, HfHubHTTPError) and status == 403:
        why = f"the token may not write to {plan.repo_id} (403): use a token with write access to that namespace"
    elif isinstance(err, HfHubHTTPError):
        why = f"the Hub answered HTTP {status}: {detail}"
    elif isinstance(err, OfflineModeIsEnabled):
        why = OFFLINE
    elif _is_network_error(err):
        why = f"cannot reach {constants.ENDPOINT} ({type(err).__name__}: {detail}); check the network or proxy"
    else:
        why = f"{type(err).__name__}: {detail}"
    left = "nothing was uploaded"
    if repo_may_exist and stage != "creating the repository":
        left += f" (the repository {plan.repo_id} exists now, possibly empty)"
    return PublishError(f"push to {plan.repo_id} failed while {stage}: {why}; {left}")


def _is_network_error(err: BaseException) -> bool:
    # huggingface_hub 1.x raises httpx errors, 2.x httpx2 errors; neither subclasses OSError.
    return isinstance(err, (OSError, TimeoutError)) or type(err).__module__.split(".")[0] in ("httpx", "httpx2")


def push_blocker() -> str | None:
    """Why a push cannot happen from here at all (HF_HUB_OFFLINE set, no token), checked without the network so that
    a command can say it before its work; None when nothing known stops it."""
    if constants.HF_HUB_OFFLINE:
        return OFFLINE
    return None if token_available() else NO_TOKEN


def token_available() -> bool:
    """Whether a push would find a token (without revealing it)."""
    return bool(get_token())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
