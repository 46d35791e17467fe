"""Hub push: the dry-run listing equals what upload_folder sends, the calls up to the network, and clear errors
when the network call itself fails (offline here, unreachable endpoint, rejected token)."""

from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

import publish.hub as hub
from publish.hub import PublishError, plan_upload, push

FAKE_TOKEN = "hf_notARealTokenButLongEnough0123456789"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "export"
    (root / "plots").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "upload.lock").write_text("")
    for name, size in {"config.json": 10, "model.safetensors": 1000, "README.md": 20, "plots/loss.png": 30}.items():
        (root / name).write_bytes(b"x" * size)
    return root


class RecordingApi:
    """Stands in for HfApi: records calls; `fail_at` raises the given exception at that call. `existing`: the
    visibility ("public" / "private") of a repo that is already there (create_repo then changes nothing)."""

    def __init__(self, fail_at=None, error=None, existing=None):
        self.calls, self.fail_at, self.error, self.existing = [], fail_at, error, existing

    def _record(self, name, **kwargs):
        self.calls.append((name, kwargs))
        if name == self.fail_at:
            raise self.error

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id=repo_id, **kwargs)
        if self.existing is None:
            self.existing = "private" if kwargs.get("private") else "public"

    def repo_info(self, repo_id, **kwargs):
        self._record("repo_info", repo_id=repo_id, **kwargs)
        return SimpleNamespace(id=repo_id, private=self.existing == "private")

    def create_branch(self, repo_id, **kwargs):
        self._record("create_branch", repo_id=repo_id, **kwargs)

    def upload_folder(self, **kwargs):
        self._record("upload_folder", **kwargs)
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def http_error(status):
    # huggingface_hub 1.x wraps httpx responses, 2.x httpx2 ones: a stand-in with what the error reads
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(f"{status} Client Error", response=response)


def test_dry_run_lists_exactly_what_upload_folder_would_send(folder, monkeypatch):
    plan = plan_upload(folder, "me/model", private=True, commit_message="Upload tiny")
    # huggingface_hub's own file walk + filter for upload_folder; its README check asks the Hub: skipped here
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, *args, **kwargs: None)
    additions = HfApi()._prepare_upload_folder_additions(folder, "", ignore_patterns=list(hub.DEFAULT_IGNORE_PATTERNS))
    assert [path for path, _ in plan.files] == sorted(op.path_in_repo for op in additions)
    assert plan.files == [("README.md", 20), ("config.json", 10), ("model.safetensors", 1000), ("plots/loss.png", 30)]
    text = plan.describe(token_found=False)
    assert "me/model (private" in text and "files:    4, 1.0 KB" in text and "NOT found" in text
    assert ".git" not in text and "upload.lock" not in text


def test_bad_repo_id_and_empty_folder_are_refused_before_any_call(tmp_path, folder):
    with pytest.raises(PublishError, match="not a valid Hub repo id"):
        plan_upload(folder, "not a repo id!")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="has no files"):
        plan_upload(tmp_path / "empty", "me/model")


def test_push_calls_create_repo_branch_and_upload_with_the_plan(folder):
    api = RecordingApi()
    plan = plan_upload(folder, "me/model", private=True, revision="step-0000020", commit_message="Upload tiny")
    url = push(plan, token=FAKE_TOKEN, api=api)
    assert url == "https://huggingface.co/me/model/commit/abc"
    assert [name for name, _ in api.calls] == ["create_repo", "repo_info", "create_branch", "upload_folder"]
    create, _, branch, upload = (kwargs for _, kwargs in api.calls)
    assert create["private"] is True and create["exist_ok"] is True and create["token"] == FAKE_TOKEN
    assert branch["branch"] == "step-0000020"
    assert upload["folder_path"] == str(folder) and upload["revision"] == "step-0000020"
    assert upload["commit_message"] == "Upload tiny" and upload["token"] == FAKE_TOKEN


@pytest.mark.parametrize("existing, private, pushed", [
    (None, True, True), ("private", True, True), ("public", False, True),
    ("public", True, False),  # asked private, but the repo is public: the upload would be published
])
def test_a_private_push_never_goes_into_an_existing_public_repo(folder, existing, private, pushed):
    """create_repo(private=True, exist_ok=True) leaves an existing public repo public: --private then published
    the upload. It is refused before anything is sent, and the message says how to go on."""
    api = RecordingApi(existing=existing)
    plan = plan_upload(folder, "me/model", private=private)
    if pushed:
        push(plan, token=FAKE_TOKEN, api=api)
    else:
        with pytest.raises(PublishError, match=r"asked private, but the repository exists and is public.*"
                                               r"hf repos settings me/model --private.*nothing was uploaded"):
            push(plan, token=FAKE_TOKEN, api=api)
    assert ("upload_folder" in [name for name, _ in api.calls]) is pushed
    assert "private: created private, or refused if it exists and is public" in plan_upload(
        folder, "me/model", private=True).describe()


def test_no_token_is_a_clear_error_and_nothing_is_called(folder, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    api = RecordingApi()
    with pytest.raises(PublishError, match="no Hugging Face token: run `hf auth login`"):
        push(plan_upload(folder, "me/model"), api=api)
    assert api.calls == []


@pytest.mark.parametrize("fail_at, status, expected", [
    ("create_repo", 401, "token was rejected"),
    ("upload_folder", 403, r"may not write to me/model .*repository me/model exists now"),
])
def test_hub_refusals_are_explained_without_the_token(folder, fail_at, status, expected):
    error = http_error(status)
    error.args = (f"{status} for token {FAKE_TOKEN}",)  # even if a server echoed it, we never print it
    with pytest.raises(PublishError, match=expected) as info:
        push(plan_upload(folder, "me/model"), token=FAKE_TOKEN, api=RecordingApi(fail_at, error))
    assert FAKE_TOKEN not in str(info.value) and "nothing was uploaded" in str(info.value)


def test_real_push_fails_cleanly_offline(folder):
    """The real HfApi under HF_HUB_OFFLINE=1 (tests/conftest.py): the first network call is refused."""
    assert constants.HF_HUB_OFFLINE
    with pytest.raises(PublishError) as info:
        push(plan_upload(folder, "me/model"), token=FAKE_TOKEN)
    message = str(info.value)
    assert "HF_HUB_OFFLINE=1 is set" in message and "nothing was uploaded" in message
    assert FAKE_TOKEN not in message


def test_real_push_fails_cleanly_when_the_hub_is_unreachable(folder, monkeypatch):
    """Online mode against an endpoint where nothing listens: a connection error, explained."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    api = HfApi(endpoint="http://127.0.0.1:9")
    with pytest.raises(PublishError, match=r"cannot reach .*nothing was uploaded") as info:
        push(plan_upload(folder, "me/model"), token=FAKE_TOKEN, api=api)
    assert FAKE_TOKEN not in str(info.value)


def test_hub_reachable_probes_the_configured_endpoint_and_trusts_a_proxy(monkeypatch):
    """The probe goes to HF_ENDPOINT's host (a mirror), and behind a proxy it does not decide (a direct TCP
    connection says nothing there): the libraries, which use the proxy, find out."""
    import socket

    from huggingface_hub import constants

    import publish.hub as hub

    tried = []

    def connect(address, timeout):
        tried.append(address)
        raise OSError("unreachable")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hf-mirror.example:8443")
    monkeypatch.setattr(socket, "create_connection", connect)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")  # common on clusters: not a proxy
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")  # for http only: an https endpoint goes direct
    assert hub.hub_reachable() is False and tried == [("hf-mirror.example", 8443)]
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.hub_reachable() is True and len(tried) == 1  # no direct probe behind the proxy
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.hub_reachable() is False
