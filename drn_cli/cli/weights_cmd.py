"""``drn weights``: list, download, locate, convert and publish model files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import HubRepoOpt, JsonOpt, QuietOpt, Reporter, download_callback

weights_app = typer.Typer(help="Manage model weights: list, download, path, convert, push.", no_args_is_help=True)


@weights_app.command("list")
def list_command(json_out: JsonOpt = False) -> None:
    """List the built-in models and whether they are available offline."""
    from ..download import cached_path
    from ..registry import BUILTIN_MODELS

    reporter = Reporter(json_mode=json_out)
    table = Table(title="built-in models")
    for col in ("name", "scale", "blocks", "feats", "available", "description"):
        table.add_column(col)
    for m in BUILTIN_MODELS.values():
        where = "bundled" if m.bundled else ("cached" if cached_path(m.primal) else "download")
        reporter.emit(
            {
                "name": m.name,
                "scale": m.scale,
                "n_blocks": m.n_blocks,
                "n_feats": m.n_feats,
                "available": where,
                "description": m.description,
            }
        )
        table.add_row(m.name, f"x{m.scale}", str(m.n_blocks), str(m.n_feats), where, m.description)
    reporter.show(table)


@weights_app.command("download")
def download_command(
    names: Annotated[list[str], typer.Argument(help="Built-in model names, e.g. drn-s-x4 (or 'all').")],
    hub_repo: HubRepoOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch and verify built-in weights (primal and dual) into the cache, for offline use."""
    from ..download import fetch
    from ..registry import BUILTIN_MODELS, resolve_builtin

    reporter = Reporter(quiet=quiet, json_mode=json_out)
    models = list(BUILTIN_MODELS.values()) if names == ["all"] else [resolve_builtin(n) for n in names]
    for m in models:
        if m.bundled is not None:
            reporter.info(f"{m.name} is bundled with drn-cli; nothing to download")
            continue
        for remote in m.files:
            with reporter.progress(transfer=True) as bar:
                path = fetch(
                    remote,
                    hub_repo=hub_repo,
                    progress=download_callback(bar, remote.filename),
                    model=m.name,
                )
            reporter.emit({"model": m.name, "file": remote.filename, "path": str(path)})
            reporter.info(f"{m.name}: {path}")


@weights_app.command("path")
def path_command(name: Annotated[str, typer.Argument(help="Built-in model name, e.g. drn-s-x4.")]) -> None:
    """Print the local path of a built-in model's weights (after `drn weights download`)."""
    from ..download import cached_path
    from ..errors import WeightsError
    from ..registry import resolve_builtin

    m = resolve_builtin(name)
    path = m.bundled_path() or cached_path(m.primal)
    if path is None:
        raise WeightsError(f"{m.name} is not downloaded yet; run `drn weights download {m.name}`")
    typer.echo(str(path))


@weights_app.command("convert")
def convert_command(
    source: Annotated[str, typer.Argument(help="A model file (.pt/.pth/.safetensors) or built-in name.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write model.safetensors and config.json into.")],
    dual: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--dual", help="Official *_dual_model.pt to include (built-in names include theirs)."),
    ] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name recorded in config.json.")] = None,  # noqa: UP045
    hub_repo: HubRepoOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a checkpoint to safetensors + config.json (what --weights and the Hub use)."""
    from ..checkpoint import read_dual_checkpoint, write_model_dir
    from ..loading import load_dual, load_model

    reporter = Reporter(quiet=quiet, json_mode=json_out)
    with reporter.progress(transfer=True) as bar:
        callback = download_callback(bar, f"fetching {source}")
        primal = load_model(source, device="cpu", hub_repo=hub_repo, progress=callback)
        if dual is not None:
            dual_net = read_dual_checkpoint(dual, primal.config)
        else:
            dual_net = load_dual(source, primal.config, hub_repo=hub_repo, progress=callback)
    write_model_dir(out_dir, primal, dual_net, name=name or primal.name)
    reporter.emit({"source": source, "output": str(out_dir), "has_dual": dual_net is not None})
    reporter.info(f"wrote {out_dir / 'model.safetensors'} and config.json (dual blocks: {dual_net is not None})")


@weights_app.command("push")
def push_command(
    directory: Annotated[Path, typer.Argument(help="A folder written by `drn weights convert`.")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repository id, e.g. you/drn-s-x4.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
) -> None:
    """Upload a converted model folder to the Hugging Face Hub (uses HF_TOKEN / your login)."""
    from ..hub import push_model_dir

    typer.echo(push_model_dir(directory, repo, private=private))


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
