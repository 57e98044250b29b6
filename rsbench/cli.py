"""The ``rsbench`` command line (typer + rich). Every error is one line on stderr and exit code 2;
set ``RSBENCH_DEBUG=1`` to see the traceback."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rsbench.errors import RsbenchError
from rsbench.progress import console

app = typer.Typer(
    name="rsbench",
    help="Train, certify and rank randomized-smoothing classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
out = typer.echo  # results go to stdout; progress and messages to stderr


def fail(message: str, hint: str | None = None) -> None:
    raise RsbenchError(message, hint)


def handle_errors(command):
    """Turn :class:`RsbenchError` (and interruptions) into one stderr line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RsbenchError as error:
            if os.environ.get("RSBENCH_DEBUG"):
                raise
            hint = f" (hint: {error.hint})" if error.hint else ""
            print(f"rsbench: error: {error.message}{hint}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("rsbench: interrupted; completed work is saved, rerun the command to resume", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def parse_key_values(items: list[str] | None, flag: str = "--param") -> dict[str, str]:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag} expects key=value, not {item!r}", f"e.g. {flag} lam=10")
        result[key.strip()] = value.strip()
    return result


def parse_extra_flags(args: list[str]) -> dict[str, str]:
    """Method hyperparameters given as their own flags: ``--lam 10``, ``--loss=mse``, ``--deferred``."""
    params: dict[str, str] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--") or len(token) < 3:
            fail(f"unexpected argument {token!r}", "hyperparameters are given as --name value")
        name, sep, value = token[2:].partition("=")
        if not sep:
            following = args[index + 1] if index + 1 < len(args) else None
            if following is None or following.startswith("--"):
                value = "true"
            else:
                value = following
                index += 1
        params[name.replace("-", "_")] = value
        index += 1
    return params


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        fail(f"{what} must be comma-separated numbers, not {text!r}")


DbOption = Annotated[str | None, typer.Option(help="Results store URL or path (default $RSBENCH_DB or ./rsbench.db).")]
DataDirOption = Annotated[Path | None, typer.Option(help="Data root (default $RSBENCH_DATA or ./data).")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: CUDA when present).")]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]
CheckpointArgument = Annotated[Path, typer.Argument(help="A checkpoint of rsbench, Cohen, Salman or Jeong & Shin.")]
SigmaOption = Annotated[float | None, typer.Option(help="σ of the smoothing noise (default: the checkpoint's).")]
BatchOption = Annotated[int, typer.Option(help="Noisy copies per forward pass.")]
SplitOption = Annotated[str, typer.Option(help="train or test.")]
SkipOption = Annotated[int, typer.Option(help="Every SKIP-th index of the split.")]
LimitOption = Annotated[int | None, typer.Option(help="At most LIMIT examples (a count).")]
IndicesOption = Annotated[str | None, typer.Option(help="Explicit indices '0,7,42' (overrides skip/limit).")]
NoiseSeedOption = Annotated[int, typer.Option("--seed", help="Seed of the noise (per example: seed, index).")]
DatasetOption = Annotated[str | None, typer.Option(help="Dataset, for official checkpoints.")]
NormalizationOption = Annotated[str | None, typer.Option(help="mean_std, mean or none, for official checkpoints.")]
CertifierOption = Annotated[str, typer.Option(help="Certifier plugin.")]


# --------------------------------------------------------------------------------------------- train

TRAIN_HELP = """Train a base classifier for randomized smoothing and record the run.

Method hyperparameters are flags of their own (`--lam 10`, `--m 2`, `--eta 0.5`, `--eps 1.0` ...): every
hyperparameter the chosen method declares is accepted, as is `--param key=value`; `rsbench plugins`
lists them. Schedules default to the dataset's paper schedule.

Examples:

    rsbench train --dataset mnist --method gaussian --sigma 0.5 --epochs 1

    rsbench train --dataset mnist --arch lenet --method consistency --sigma 0.5 --lam 5 --m 2

    rsbench train --preset mnist-consistency-0.50 --train-limit 2000 --epochs 1

    rsbench train --config run.toml --seed 3
"""


@app.command(
    help=TRAIN_HELP,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@handle_errors
def train(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="Dataset plugin, e.g. mnist, cifar10, imagenet.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture (default: the dataset's).")] = None,
    method: Annotated[str | None, typer.Option(help="Training method plugin (default: gaussian).")] = None,
    sigma: Annotated[float | None, typer.Option(help="Noise level σ in [0,1] pixel units.")] = None,
    preset: Annotated[str | None, typer.Option(help="A named configuration, e.g. a paper row.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML file of settings; flags override.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Method hyperparameter key=value.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: paper schedule).")] = None,
    batch: Annotated[int | None, typer.Option(help="Loader batch size (default 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    milestones: Annotated[str | None, typer.Option(help="Epochs where lr is multiplied by 0.1, '30,60'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/NAME).")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Train on the first N examples (smoke runs).")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test examples.")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    workers: Annotated[int, typer.Option(help="Data-loader workers for file-based datasets.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    from rsbench import config as cfg
    from rsbench.store import open_store
    from rsbench.training import TrainConfig
    from rsbench.training import train as run_training

    layers = []
    if preset:
        layers.append(cfg.preset_settings(preset))
    if config:
        file_settings = cfg.read_config_file(config)
        cfg.check_keys(file_settings, TrainConfig, str(config))
        layers.append(file_settings)
    flags = {
        "dataset": dataset, "arch": arch, "method": method, "sigma": sigma, "epochs": epochs,
        "batch_size": batch, "lr": lr, "seed": seed, "train_limit": train_limit, "test_limit": test_limit,
        "data_dir": str(data_dir) if data_dir else None, "device": device, "workers": workers,
        "out": str(out_dir) if out_dir else None,
        "milestones": tuple(int(m) for m in parse_floats(milestones, "--milestones")) if milestones else None,
        "params": {**parse_key_values(param), **parse_extra_flags(ctx.args)},
    }
    settings = cfg.merge({"method": "gaussian"}, *layers, flags)
    if "dataset" not in settings:
        fail("no dataset given", "pass --dataset (e.g. mnist) or a --preset")
    if "sigma" not in settings:
        fail("no noise level given", "pass --sigma (e.g. 0.5) or a --preset")
    from rsbench.plugins import get_dataset

    settings.setdefault("arch", get_dataset(settings["dataset"]).default_arch)
    given = "".join(f"-{k}{v}" for k, v in sorted(settings["params"].items()))
    name = f"{settings['dataset']}-{settings['method']}-sigma{settings['sigma']}{given}-seed{settings.get('seed', 0)}"
    settings.setdefault("out", f"runs/{name}")
    train_config = TrainConfig(**settings)
    store = open_store(db)  # fail on a bad store before hours of training
    result = run_training(train_config, resume=resume, show_progress=progress)
    store.record_training(train_config, result)
    console.print(
        f"trained {train_config.method} on {train_config.dataset}: noisy test accuracy "
        f"{result.test_accuracy:.4f}, {result.images_per_second:,.0f} images/s "
        f"({result.noisy_passes_per_second:,.0f} noisy forward passes/s)"
    )
    out(str(result.checkpoint))


# ------------------------------------------------------------------------------- certify / predict



def _run_certification(kind: str, checkpoint: Path, **settings: Any) -> None:
    from rsbench.certification import CertifyConfig
    from rsbench.certification import certify as run_certify
    from rsbench.store import open_store

    db = settings.pop("db")
    show_progress = settings.pop("progress")
    indices = settings.pop("indices")
    data_dir = settings.pop("data_dir")
    config = CertifyConfig(
        checkpoint=str(checkpoint), kind=kind,
        indices=[int(i) for i in parse_floats(indices, "--indices")] if indices else None,
        data_dir=str(data_dir) if data_dir else None,
        **settings,
    )
    store = open_store(db)
    run_id = run_certify(config, store, show_progress=show_progress)
    rows = store.results([run_id])
    console.print(
        f"run {run_id}: {len(rows)} examples, accuracy {rows.correct.mean():.4f}, "
        f"abstained {(rows.predict == -1).mean():.4f}"
        + (f", ACR {(rows.correct * rows.radius).mean():.4f}" if kind == "certify" else "")
    )
    out(str(run_id))


@app.command()
@handle_errors
def certify(
    checkpoint: CheckpointArgument,
    sigma: SigmaOption = None,
    n0: Annotated[int, typer.Option(help="Selection draws.")] = 100,
    n: Annotated[int, typer.Option(help="Estimation draws.")] = 100_000,
    alpha: Annotated[float, typer.Option(help="Failure probability of the certificate.")] = 0.001,
    batch: BatchOption = 1000,
    split: SplitOption = "test",
    skip: SkipOption = 1,
    limit: LimitOption = None,
    indices: IndicesOption = None,
    noise_seed: NoiseSeedOption = 0,
    dataset: DatasetOption = None,
    normalization: NormalizationOption = None,
    certifier: CertifierOption = "cohen",
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    images_per_batch: Annotated[int, typer.Option(help="Inputs sharing one forward pass (faster on GPUs).")] = 1,
    budget: Annotated[str | None, typer.Option(help="Label of a scaled-down protocol, e.g. quick.")] = None,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    """Certify the smoothed classifier of a checkpoint (Cohen's CERTIFY); rows go to the store as they are
    done, and rerunning an interrupted command resumes it. Prints the run id.

    Examples:

        rsbench certify runs/mnist/checkpoint.pth.tar --skip 10 --limit 100 --n 10000

        rsbench certify cohen_models/cifar10/resnet110/noise_0.50/checkpoint.pth.tar --dataset cifar10
    """
    _run_certification("certify", checkpoint, sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, split=split,
                       skip=skip, limit=limit, indices=indices, noise_seed=noise_seed, dataset=dataset,
                       normalization=normalization, certifier=certifier, data_dir=data_dir, device=device,
                       images_per_batch=images_per_batch, budget=budget, db=db, progress=progress)


@app.command()
@handle_errors
def predict(
    checkpoint: CheckpointArgument,
    sigma: SigmaOption = None,
    n: Annotated[int, typer.Option(help="Noise draws.")] = 1000,
    alpha: Annotated[float, typer.Option(help="Level of the binomial test.")] = 0.001,
    batch: BatchOption = 1000,
    split: SplitOption = "test",
    skip: SkipOption = 1,
    limit: LimitOption = None,
    indices: IndicesOption = None,
    noise_seed: NoiseSeedOption = 0,
    dataset: DatasetOption = None,
    normalization: NormalizationOption = None,
    certifier: CertifierOption = "cohen",
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    """Predict with the smoothed classifier (Cohen's PREDICT, abstaining when the top two classes cannot be
    told apart at level α). Prints the run id.

    Example: `rsbench predict runs/mnist/checkpoint.pth.tar --n 1000 --limit 100`
    """
    _run_certification("predict", checkpoint, sigma=sigma, n=n, alpha=alpha, batch=batch, split=split, skip=skip,
                       limit=limit, indices=indices, noise_seed=noise_seed, dataset=dataset,
                       normalization=normalization, certifier=certifier, data_dir=data_dir, device=device,
                       db=db, progress=progress)


# ------------------------------------------------------------------------------ import / export / runs


@app.command("import")
@handle_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="Cohen-format TSV logs.")],
    dataset: Annotated[str, typer.Option(help="Dataset the log certifies.")],
    method: Annotated[str, typer.Option(help="Training method of the certified model.")],
    sigma: Annotated[float, typer.Option(help="σ used for certification (and training).")],
    param: Annotated[list[str] | None, typer.Option(help="Method hyperparameter key=value.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (several files, none given: 0, 1, ...).")] = None,
    n0: Annotated[int, typer.Option(help="N0 of the log's protocol.")] = 100,
    n: Annotated[int, typer.Option(help="N of the log's protocol.")] = 100_000,
    alpha: Annotated[float, typer.Option(help="α of the log's protocol.")] = 0.001,
    arch: Annotated[str | None, typer.Option(help="Architecture of the certified model.")] = None,
    db: DbOption = None,
):
    """Import certification logs (`idx label predict radius correct time`), one run per file, so published
    results sit in the same leaderboard as new runs. Prints the run ids.

    Example: `rsbench import logs/noise_0.50_* --dataset mnist --method gaussian --sigma 0.5`
    """
    from rsbench.cohen_tsv import import_tsv
    from rsbench.store import open_store

    store = open_store(db)
    params = parse_key_values(param)
    for index, path in enumerate(files):
        run_seed = seed if seed is not None or len(files) == 1 else index
        run_id = import_tsv(store, path, dataset=dataset, method=method, sigma=sigma, params=params,
                            seed=run_seed, n0=n0, n=n, alpha=alpha, arch=arch)
        out(str(run_id))


@app.command()
@handle_errors
def export(
    run: Annotated[int, typer.Argument(help="Run id (see `rsbench runs`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="TSV file to write.")],
    db: DbOption = None,
):
    """Export a run's rows as Cohen's TSV.

    Example: `rsbench export 3 -o noise_0.50.tsv`
    """
    from rsbench.cohen_tsv import export_tsv
    from rsbench.store import open_store

    count = export_tsv(open_store(db), run, output)
    console.print(f"wrote {count} rows to {output}")


@app.command()
@handle_errors
def runs(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    db: DbOption = None,
):
    """List certification runs in the store.

    Example: `rsbench runs --dataset mnist`
    """
    from rsbench.store import open_store

    store = open_store(db)
    frame = store.runs(dataset, kind=None)
    table = Table(title=f"runs in {store.url}")
    for column in ("id", "kind", "origin", "status", "dataset", "method", "params", "σ", "seed", "N", "examples",
                   "budget"):
        table.add_column(column)
    counts = store.result_counts(frame["id"].tolist())
    for row in frame.itertuples():
        table.add_row(str(row.id), row.kind, row.origin, row.status, row.dataset, row.method,
                      ", ".join(f"{k}={v}" for k, v in row.params.items()), f"{row.sigma:g}", str(row.seed),
                      f"{row.n:,}", f"{counts.get(row.id, 0)}/{row.num_planned}", row.budget or "full")
    console.print(table)


# --------------------------------------------------------------------------------------- leaderboard


@app.command()
@handle_errors
def leaderboard(
    dataset: Annotated[str, typer.Option(help="Dataset to rank.")],
    fmt: Annotated[str, typer.Option("--format", help="rich, markdown, latex, csv or json.")] = "rich",
    radii: Annotated[str | None, typer.Option(help="Radius grid start:stop:step or a list.")] = None,
    reported: Annotated[bool, typer.Option("--reported", help="Add the paper's reported rows.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file instead of stdout.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also plot certified accuracy vs radius (PNG + PDF).")] = None,
    db: DbOption = None,
):
    """Rank methods by σ: ACR and certified accuracy at each radius, mean ± std over seeds.

    Examples:

        rsbench leaderboard --dataset mnist

        rsbench leaderboard --dataset mnist --reported --format markdown -o leaderboards/mnist.md

        rsbench leaderboard --dataset mnist --format json --radii 0:3.5:0.5
    """
    from rsbench import leaderboard as lb
    from rsbench.plugins import get_dataset
    from rsbench.store import open_store

    get_dataset(dataset)
    if fmt not in ("rich", "markdown", "latex", "csv", "json"):
        fail(f"unknown format {fmt!r}", "choose rich, markdown, latex, csv or json")
    store = open_store(db)
    board = lb.build(store, dataset, lb.parse_radii(radii), include_reported=reported)
    if not board["rows"]:
        console.print(f"no complete certification runs for {dataset} in {store.url}")
    if plot:
        for path in lb.plot(store, board, plot):
            console.print(f"wrote {path}")
    if fmt == "rich" and output is None:
        header, cells, bold = lb.table(board)
        table = Table(title=lb.protocol_note(board), title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for line, flags in zip(cells, bold, strict=True):
            table.add_row(*(f"[bold green]{c}[/]" if f else c for c, f in zip(line, flags, strict=True)))
        from rich.console import Console

        Console(width=max(160, console.width)).print(table)
        return
    text = lb.render(board, "markdown" if fmt == "rich" else fmt)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        out(text.rstrip("\n"))


# ------------------------------------------------------------------------------------------ reproduce


@app.command()
@handle_errors
def reproduce(
    experiment: Annotated[str | None, typer.Argument(help="Experiment name (see --list).")] = None,
    budget: Annotated[str, typer.Option(help="full (paper settings), quick (CPU minutes) or smoke.")] = "full",
    list_: Annotated[bool, typer.Option("--list", help="List the experiments.")] = False,
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    output_dir: Annotated[Path, typer.Option(help="Where the leaderboard markdown goes.")] = Path("leaderboards"),
    methods: Annotated[str | None, typer.Option(help="Only these methods, 'gaussian,stability'.")] = None,
    sigmas: Annotated[str | None, typer.Option(help="Only these σ, '0.5,1.0'.")] = None,
    device: DeviceOption = None,
    db: DbOption = None,
    progress: ProgressOption = True,
):
    """Reproduce one of the paper's tables: train, certify and rank every row, skipping what the store already
    holds (rerun after an interruption to continue). Prints the leaderboard.

    Examples:

        rsbench reproduce --list

        rsbench reproduce table2-slice --budget quick

        rsbench reproduce table3 --budget full --device cuda

        rsbench reproduce table2 --budget quick --methods stability --sigmas 0.5,1.0
    """
    from rsbench import leaderboard as lb
    from rsbench import reproduce as rp
    from rsbench.store import open_store

    if list_ or experiment is None:
        table = Table(title="experiments (rsbench reproduce NAME --budget full|quick|smoke)")
        table.add_column("name")
        table.add_column("description")
        for name, description in rp.list_experiments().items():
            table.add_row(name, description)
        console.print(table)
        return
    store = open_store(db)
    board, timings = rp.reproduce(
        experiment, budget, store, str(data_dir) if data_dir else None, str(runs_dir), str(output_dir), device,
        progress, methods=[m.strip() for m in methods.split(",")] if methods else None,
        sigmas=list(parse_floats(sigmas, "--sigmas")) if sigmas else None,
    )
    for timing in timings:
        console.print(f"{timing['method']} σ={timing['sigma']} seed {timing['seed']}: train "
                      f"{timing['train_seconds']:.0f} s, certify {timing['certify_seconds']:.0f} s")
    out(lb.render(board, "markdown").rstrip("\n"))


# ------------------------------------------------------------------------------------------- plugins


@app.command()
@handle_errors
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
):
    """List every plugin, where it comes from, and what it registers (with hyperparameters and presets).

    Example: `rsbench plugins --json`
    """
    from rsbench.params import describe_params
    from rsbench.plugins import get_manager

    manager = get_manager()
    registries = manager.registries
    listing = []
    for info in sorted(manager.info.values(), key=lambda i: (not i.builtin, i.name)):
        entry: dict[str, Any] = {
            "name": info.name, "module": info.module,
            "source": "built-in" if info.builtin else info.distribution,
            "version": info.version, "registers": {},
        }
        for kind, names in info.registers.items():
            items = []
            for name in names:
                thing = registries[kind].get(name)
                item: dict[str, Any] = {"name": name, "description": thing.description}
                if hasattr(thing, "Params"):
                    item["params"] = describe_params(thing.Params)
                if getattr(thing, "presets", None):
                    item["presets"] = [
                        {"name": p.name, "description": p.description, "dataset": p.dataset,
                         "sigma": p.sigma, "params": p.params} for p in thing.presets
                    ]
                items.append(item)
            entry["registers"][kind] = items
        listing.append(entry)
    if as_json:
        out(json.dumps(listing, indent=2, default=str))
        return
    table = Table(title="rsbench plugins", show_lines=True)
    for column in ("plugin", "source", "registers"):
        table.add_column(column)
    for entry in listing:
        lines = []
        for kind, items in entry["registers"].items():
            for item in items:
                lines.append(f"[bold]{kind}[/] {item['name']}: {item['description']}")
                for p in item.get("params", []):
                    extra = f" [{p['constraint']}]" if p["constraint"] else ""
                    flag = "--" + p["name"].replace("_", "-")
                    lines.append(f"    {flag} {p['type']} = {p['default']}{extra}: {p['help']}")
                if item.get("presets"):
                    lines.append("    presets: " + ", ".join(p["name"] for p in item["presets"]))
        table.add_row(entry["name"], f"{entry['source']} {entry['version']}".strip(), "\n".join(lines))
    console.print(table)


# ------------------------------------------------------------------------------------------ download


@app.command()
@handle_errors
def download(
    dataset: Annotated[str, typer.Argument(help="Dataset plugin name.")],
    data_dir: DataDirOption = None,
):
    """Download a dataset into the data root with torchvision (needs internet).

    Example: `rsbench download mnist --data-dir data`
    """
    from rsbench.data import data_root
    from rsbench.plugins import get_dataset

    spec = get_dataset(dataset)
    if spec.download is None:
        fail(f"dataset {dataset!r} cannot be downloaded automatically", f"place it as {spec.layout}")
    root = data_root(data_dir)
    try:
        spec.download(root)
    except (OSError, RuntimeError) as error:
        fail(f"downloading {dataset} failed: {str(error).splitlines()[0]}", "check the network, or copy the files "
             f"into {root} as {spec.layout}")
    out(str(root))


def main() -> None:
    app()
