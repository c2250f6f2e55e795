"""Publishing converted models to a Hugging Face Hub repository.

Uses ``huggingface_hub`` so that ``HF_TOKEN`` (or ``hf auth login``) and ``HF_ENDPOINT`` work as usual.
"""

from __future__ import annotations

from pathlib import Path

from drn_cli.errors import WeightsError

#: Files a converted model folder must hold to be pushed.
REQUIRED_FILES = ("model.safetensors", "config.json")


def push_model_dir(directory: Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Upload a converted model folder (``model.safetensors`` + ``config.json``) to the Hub repo ``repo_id``.

    The repository is created if needed (as private when ``private`` is set; an existing one keeps its
    visibility). ``token`` defaults to the one ``huggingface_hub`` finds (``HF_TOKEN`` or a saved login).
    Every file of the folder is uploaded in one commit. Returns the repository's URL.

    Raises :class:`WeightsError` when the folder or one of its required files is missing, or when the
    Hub refuses the upload.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(f"{directory} is not a folder; pass the folder written by the conversion.")
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise WeightsError(
            f"{directory} has no {' or '.join(missing)}; push a folder written by the conversion, "
            f"which holds {' and '.join(REQUIRED_FILES)}."
        )

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        # private=None rather than False lets an organisation's default visibility apply.
        url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            repo_type="model",
            commit_message="Upload DRN model converted with drn-cli",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = " (check HF_TOKEN and your write access)" if status in (401, 403) else ""
        summary = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"Uploading {directory} to {repo_id} failed{hint}: {summary.rstrip('.')}.") from e
    except ValueError as e:
        # huggingface_hub raises ValueError (HFValidationError) for a malformed repo id.
        raise WeightsError(f"Cannot push to '{repo_id}': {str(e).strip().rstrip('.')}.") from e
    return str(url)
